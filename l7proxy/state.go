package l7proxy

import (
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resources the proxy subscribes to.
const (
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// typeState is what the proxy holds of one resource type: the accepted
// resources (for the config dump) and the last rejection of each name.
type typeState struct {
	version   string // last accepted version_info
	nonce     string // nonce of the last response
	received  bool   // a response was accepted at least once
	resources map[string]appliedResource
	errors    map[string]*adminv3.UpdateFailureState
}

type appliedResource struct {
	raw     *anypb.Any
	version string
	updated time.Time
}

func newTypeState() *typeState {
	return &typeState{resources: map[string]appliedResource{}, errors: map[string]*adminv3.UpdateFailureState{}}
}

// snapshot is one complete configuration. Each request runs the snapshot
// current when it arrives.
type snapshot struct {
	listeners map[string]*listenerSpec
	routes    map[string]*routeSpec
	clusters  map[string]*upstream
}
