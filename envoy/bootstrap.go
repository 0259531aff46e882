package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"
)

// Names and defaults of the bootstrap's static resources.
const (
	XDSClusterName        = "moat/xds"
	AdminClusterName      = "moat/admin"
	StatsListenerName     = "moat/prometheus"
	DefaultNodeCluster    = "moat"
	DefaultRE2ProgramSize = 1000
)

// Default addresses of the bootstrap.
var (
	DefaultAdminAddress = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 9901)
	DefaultStatsAddress = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 9964)
)

// BootstrapConfig describes the Envoy that moat drives.
type BootstrapConfig struct {
	// NodeName is the xDS node ID; the agent serves the snapshot of that
	// name. Required.
	NodeName string
	// NodeCluster is the node's cluster. Default "moat".
	NodeCluster string
	// XDSSocket is the path of the agent's ADS unix socket. Required.
	XDSSocket string
	// AccessLogSocket is the path of the agent's gRPC access-log service
	// unix socket. Required.
	AccessLogSocket string
	// AccessLogCluster names the access-log cluster; it must match
	// Config.AccessLogCluster. Default "moat/access-log".
	AccessLogCluster string
	// AdminSocket puts the admin interface on a unix socket. When empty the
	// admin listens on AdminAddress (default 127.0.0.1:9901).
	AdminSocket  string
	AdminAddress netip.AddrPort
	// StatsAddress is where a listener serves /stats/prometheus and /ready
	// from the admin interface. Default 127.0.0.1:9964.
	StatsAddress netip.AddrPort
	// RE2MaxProgramSize raises Envoy's limit on compiled regex size
	// (runtime re2.max_program_size.error_level, Envoy's default 100) so
	// that policy regexes are not refused. Default 1000.
	RE2MaxProgramSize uint32
}

// WithDefaults returns c with zero fields set to their defaults.
func (c BootstrapConfig) WithDefaults() BootstrapConfig {
	if c.NodeCluster == "" {
		c.NodeCluster = DefaultNodeCluster
	}
	if c.AccessLogCluster == "" {
		c.AccessLogCluster = DefaultAccessLogCluster
	}
	if c.AdminSocket == "" && !c.AdminAddress.IsValid() {
		c.AdminAddress = DefaultAdminAddress
	}
	if !c.StatsAddress.IsValid() {
		c.StatsAddress = DefaultStatsAddress
	}
	if c.RE2MaxProgramSize == 0 {
		c.RE2MaxProgramSize = DefaultRE2ProgramSize
	}
	return c
}

// Validate reports the problems of a defaulted BootstrapConfig.
func (c BootstrapConfig) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is required"))
	}
	if c.XDSSocket == "" {
		errs = append(errs, errors.New("xDS socket path is required"))
	}
	if c.AccessLogSocket == "" {
		errs = append(errs, errors.New("access-log socket path is required"))
	}
	if c.AdminSocket != "" && c.AdminAddress.IsValid() {
		errs = append(errs, errors.New("admin socket and admin address are both set"))
	}
	if c.AdminSocket == "" && c.AdminAddress == c.StatsAddress {
		errs = append(errs, fmt.Errorf("admin and stats listener share %s", c.StatsAddress))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate bootstrap config: %w", err)
	}
	return nil
}

// Bootstrap returns the bootstrap of an Envoy driven by moat: node ID, ADS
// (listeners and clusters, routes through RDS over the same stream) over the
// agent's unix socket, the static access-log cluster, the admin interface,
// and a Prometheus listener that exposes only /stats/prometheus and /ready.
func Bootstrap(cfg BootstrapConfig) (*bootstrapv3.Bootstrap, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	xds, err := pipeCluster(XDSClusterName, cfg.XDSSocket, true)
	if err != nil {
		return nil, fmt.Errorf("build bootstrap: %w", err)
	}
	als, err := pipeCluster(cfg.AccessLogCluster, cfg.AccessLogSocket, true)
	if err != nil {
		return nil, fmt.Errorf("build bootstrap: %w", err)
	}
	var adminAddr *corev3.Address
	var admin *clusterv3.Cluster
	if cfg.AdminSocket != "" {
		adminAddr = pipeAddress(cfg.AdminSocket)
		admin, err = pipeCluster(AdminClusterName, cfg.AdminSocket, false)
	} else {
		adminAddr = socketAddress(cfg.AdminAddress.Addr(), cfg.AdminAddress.Port())
		admin, err = staticCluster(AdminClusterName, adminAddr, false)
	}
	if err != nil {
		return nil, fmt.Errorf("build bootstrap: %w", err)
	}
	stats, err := statsListener(cfg.StatsAddress)
	if err != nil {
		return nil, fmt.Errorf("build bootstrap: %w", err)
	}
	rt, err := structpb.NewStruct(map[string]any{"re2.max_program_size.error_level": float64(cfg.RE2MaxProgramSize)})
	if err != nil {
		return nil, fmt.Errorf("build bootstrap runtime: %w", err)
	}
	ads := &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{Id: cfg.NodeName, Cluster: cfg.NodeCluster},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{stats},
			Clusters:  []*clusterv3.Cluster{xds, als, admin},
		},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSClusterName},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
		Admin: &bootstrapv3.Admin{Address: adminAddr},
		LayeredRuntime: &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{{
			Name:           "moat-static",
			LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: rt},
		}}},
	}
	if err := validateDeep(b); err != nil {
		return nil, fmt.Errorf("validate bootstrap: %w", err)
	}
	return b, nil
}

func pipeAddress(path string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}}
}

func pipeCluster(name, path string, http2 bool) (*clusterv3.Cluster, error) {
	return staticCluster(name, pipeAddress(path), http2)
}

// staticCluster is a cluster with one fixed endpoint; http2 makes it speak
// HTTP/2 (gRPC).
func staticCluster(name string, addr *corev3.Address, http2 bool) (*clusterv3.Cluster, error) {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(DefaultConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
			}}}},
		},
	}
	if http2 {
		opts, err := toAny(&upstreamhttpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			return nil, fmt.Errorf("build cluster %s: %w", name, err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsName: opts}
	}
	return c, nil
}

// statsListener serves the admin's /stats/prometheus and /ready, and 404
// for everything else, so the admin interface itself stays private.
func statsListener(addr netip.AddrPort) (*listenerv3.Listener, error) {
	toAdmin := func(path string) *routev3.Route {
		return &routev3.Route{
			Name:  path,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminClusterName},
			}},
		}
	}
	routerAny, err := toAny(&routerv3.Router{})
	if err != nil {
		return nil, fmt.Errorf("build stats listener: %w", err)
	}
	hcm, err := toAny(&hcmv3.HttpConnectionManager{
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		StatPrefix: "moat_prometheus",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: StatsListenerName,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "stats",
				Domains: []string{"*"},
				Routes: []*routev3.Route{
					toAdmin("/stats/prometheus"),
					toAdmin("/ready"),
					{
						Name:   "not-found",
						Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
						Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 404}},
					},
				},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: routerAny}}},
	})
	if err != nil {
		return nil, fmt.Errorf("build stats listener: %w", err)
	}
	return &listenerv3.Listener{
		Name:    StatsListenerName,
		Address: socketAddress(addr.Addr(), addr.Port()),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       hcmFilterName,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}, nil
}

// BootstrapJSON renders b as indented JSON, stable for a given b.
func BootstrapJSON(b *bootstrapv3.Bootstrap) ([]byte, error) {
	raw, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("render bootstrap: %w", err)
	}
	// protojson varies its whitespace on purpose; re-indenting makes the
	// output stable.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("render bootstrap: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// BootstrapYAML renders b as YAML (Envoy's -c file format).
func BootstrapYAML(b *bootstrapv3.Bootstrap) ([]byte, error) {
	raw, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("render bootstrap: %w", err)
	}
	out, err := yaml.JSONToYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("render bootstrap: %w", err)
	}
	return out, nil
}
