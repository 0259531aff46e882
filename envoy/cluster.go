package envoy

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/moatnet/moat/policy"
)

// Socket option numbers of Linux.
const (
	solSocket = 1  // SOL_SOCKET
	soMark    = 36 // SO_MARK
)

const httpProtocolOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// originalDstCluster returns the ORIGINAL_DST cluster of direction d whose
// upstream sockets carry the from-proxy mark of source identity src.
//
// Stock Envoy sets socket options per cluster (upstream_bind_config), not
// per connection, so the mark is fixed by the cluster:
//
//   - egress: the source is the local endpoint, known per filter chain, so
//     each source identity gets its own cluster
//     (moat/egress/original-dst/id-<N>) and its route configuration points
//     there. The destination's ingress policy then sees the right source
//     identity even though the packet leaves from the proxy.
//   - ingress: the source is the remote peer, which varies per connection
//     within a filter chain; routes cannot select a cluster by source
//     address, and a filter chain per (endpoint, remote identity) would
//     multiply chains by the ipcache size. The compromise: one cluster
//     (moat/ingress/original-dst) whose mark carries the ingress nibble and
//     identity 0. The RBAC filter has already applied the endpoint's
//     ingress policy to the real source address, the access log names the
//     source, and the nibble stops the datapath from redirecting the packet
//     a second time.
//
// The upstream speaks the downstream's protocol (HTTP/1.1 or HTTP/2).
func originalDstCluster(cfg Config, d policy.Direction, src policy.ID) (*clusterv3.Cluster, error) {
	mark, err := policy.ProxyMark(d, src)
	if err != nil {
		return nil, fmt.Errorf("build cluster %s: %w", ClusterName(d, src), err)
	}
	opts, err := toAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
				Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("build cluster %s: %w", ClusterName(d, src), err)
	}
	return &clusterv3.Cluster{
		Name:                 ClusterName(d, src),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(cfg.ConnectTimeout),
		UpstreamBindConfig: &corev3.BindConfig{
			SocketOptions: []*corev3.SocketOption{{
				Description: fmt.Sprintf("SO_MARK %#x: left the %s proxy for identity %d", mark, d, uint32(src)),
				Level:       solSocket,
				Name:        soMark,
				Value:       &corev3.SocketOption_IntValue{IntValue: int64(mark)},
				State:       corev3.SocketOption_STATE_PREBIND,
			}},
		},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptionsName: opts},
	}, nil
}
