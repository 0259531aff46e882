package admintest

import (
	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DumpBuilder assembles an adminv3.ConfigDump the way Envoy lays it out:
// bootstrap, clusters, listeners, routes, in that order.
type DumpBuilder struct {
	bootstrap *adminv3.BootstrapConfigDump
	listeners *adminv3.ListenersConfigDump
	clusters  *adminv3.ClustersConfigDump
	routes    *adminv3.RoutesConfigDump
	updated   *timestamppb.Timestamp
}

// NewDump starts an empty dump whose resources were last updated at a
// fixed time.
func NewDump() *DumpBuilder {
	return &DumpBuilder{
		listeners: &adminv3.ListenersConfigDump{},
		clusters:  &adminv3.ClustersConfigDump{},
		routes:    &adminv3.RoutesConfigDump{},
		updated:   &timestamppb.Timestamp{Seconds: 1767225600},
	}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic("admintest: pack " + string(m.ProtoReflect().Descriptor().FullName()) + ": " + err.Error())
	}
	return a
}

// Bootstrap adds the bootstrap section with node ID node and a static
// cluster, like a real Envoy's first config.
func (b *DumpBuilder) Bootstrap(node string) *DumpBuilder {
	b.bootstrap = &adminv3.BootstrapConfigDump{
		Bootstrap: &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: node, Cluster: "moat"}},
	}
	b.clusters.StaticClusters = append(b.clusters.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{
		Cluster:     mustAny(&clusterv3.Cluster{Name: "moat/xds"}),
		LastUpdated: b.updated,
	})
	return b
}

// Listener adds an active dynamic listener.
func (b *DumpBuilder) Listener(version string, l *listenerv3.Listener) *DumpBuilder {
	b.listeners.VersionInfo = version
	b.listeners.DynamicListeners = append(b.listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
		Name: l.GetName(),
		ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{
			VersionInfo: version, Listener: mustAny(l), LastUpdated: b.updated,
		},
		ClientStatus: adminv3.ClientResourceStatus_ACKED,
	})
	return b
}

// WarmingListener adds a listener that is only warming.
func (b *DumpBuilder) WarmingListener(version string, l *listenerv3.Listener) *DumpBuilder {
	b.listeners.DynamicListeners = append(b.listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
		Name: l.GetName(),
		WarmingState: &adminv3.ListenersConfigDump_DynamicListenerState{
			VersionInfo: version, Listener: mustAny(l), LastUpdated: b.updated,
		},
	})
	return b
}

func (b *DumpBuilder) failure(version, details string, failed proto.Message) *adminv3.UpdateFailureState {
	return &adminv3.UpdateFailureState{
		FailedConfiguration: mustAny(failed),
		LastUpdateAttempt:   b.updated,
		Details:             details,
		VersionInfo:         version,
	}
}

// ListenerError records a rejected update of listener l. If a listener of
// that name was added before, the error is attached to it (an older
// version stays active), else the entry holds only the error.
func (b *DumpBuilder) ListenerError(version, details string, l *listenerv3.Listener) *DumpBuilder {
	for _, dl := range b.listeners.DynamicListeners {
		if dl.GetName() == l.GetName() {
			dl.ErrorState = b.failure(version, details, l)
			dl.ClientStatus = adminv3.ClientResourceStatus_NACKED
			return b
		}
	}
	b.listeners.DynamicListeners = append(b.listeners.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
		Name:         l.GetName(),
		ErrorState:   b.failure(version, details, l),
		ClientStatus: adminv3.ClientResourceStatus_NACKED,
	})
	return b
}

// Cluster adds an active dynamic cluster.
func (b *DumpBuilder) Cluster(version string, c *clusterv3.Cluster) *DumpBuilder {
	b.clusters.VersionInfo = version
	b.clusters.DynamicActiveClusters = append(b.clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
		VersionInfo: version, Cluster: mustAny(c), LastUpdated: b.updated,
		ClientStatus: adminv3.ClientResourceStatus_ACKED,
	})
	return b
}

// ClusterError records a rejected cluster update as an entry that holds
// only the error state.
func (b *DumpBuilder) ClusterError(version, details string, c *clusterv3.Cluster) *DumpBuilder {
	b.clusters.DynamicActiveClusters = append(b.clusters.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
		ErrorState:   b.failure(version, details, c),
		ClientStatus: adminv3.ClientResourceStatus_NACKED,
	})
	return b
}

// Route adds an active dynamic route configuration.
func (b *DumpBuilder) Route(version string, rc *routev3.RouteConfiguration) *DumpBuilder {
	b.routes.DynamicRouteConfigs = append(b.routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
		VersionInfo: version, RouteConfig: mustAny(rc), LastUpdated: b.updated,
		ClientStatus: adminv3.ClientResourceStatus_ACKED,
	})
	return b
}

// RouteError records a rejected route configuration update.
func (b *DumpBuilder) RouteError(version, details string, rc *routev3.RouteConfiguration) *DumpBuilder {
	b.routes.DynamicRouteConfigs = append(b.routes.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
		ErrorState:   b.failure(version, details, rc),
		ClientStatus: adminv3.ClientResourceStatus_NACKED,
	})
	return b
}

// Build returns the dump.
func (b *DumpBuilder) Build() *adminv3.ConfigDump {
	d := &adminv3.ConfigDump{}
	if b.bootstrap != nil {
		d.Configs = append(d.Configs, mustAny(b.bootstrap))
	}
	d.Configs = append(d.Configs, mustAny(b.clusters), mustAny(b.listeners), mustAny(b.routes))
	return d
}
