package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// waitTimeout bounds every wait in the tests; a healthy run takes
// milliseconds.
const waitTimeout = 20 * time.Second

type testServer struct {
	*Server
	reg    *prometheus.Registry
	socket string
}

// startServer runs a Server on a fresh unix socket (and 127.0.0.1:0 if tcp)
// until the test ends.
func startServer(tb testing.TB, tcp bool, logOut io.Writer) *testServer {
	tb.Helper()
	dir, err := os.MkdirTemp("", "xds")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	cfg := Config{Socket: filepath.Join(dir, "xds.sock")}
	if tcp {
		cfg.TCPAddr = "127.0.0.1:0"
	}
	reg := prometheus.NewRegistry()
	if logOut == nil {
		logOut = io.Discard
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelWarn})), reg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			tb.Errorf("run: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-errc:
		tb.Fatalf("run: %v", err)
	case <-time.After(waitTimeout):
		tb.Fatal("server not ready")
	}
	return &testServer{Server: s, reg: reg, socket: cfg.Socket}
}

// dial connects to the server's unix socket or, if tcp, its TCP address.
func (s *testServer) dial(tb testing.TB, tcp bool) *grpc.ClientConn {
	tb.Helper()
	target := "unix://" + s.socket
	if tcp {
		target = s.TCPAddr().String()
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// response is the part of a SotW or delta response that the tests look at.
type response struct {
	typeURL string
	version string // version_info (SotW) or system_version_info (delta)
	nonce   string
	names   []string     // delta: resource names
	any     []*anypb.Any // SotW: resources, decoded by resourceNames when needed
}

// resourceNames returns the names of the resources of r.
func (r response) resourceNames() ([]string, error) {
	if r.any == nil {
		return r.names, nil
	}
	names := make([]string, 0, len(r.any))
	for _, a := range r.any {
		name, err := resourceName(a)
		if err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// adsStream is a minimal ADS client, SotW or delta, that sends the node only
// in its first request, as Envoy does.
type adsStream interface {
	subscribe(typeURL string) error
	recv() (response, error)
	ack(r response) error
	nack(r response, detail string) error
	close()
}

type protocol string

const (
	sotw  protocol = "sotw"
	delta protocol = "delta"
)

func openStream(ctx context.Context, conn *grpc.ClientConn, p protocol, node string) (adsStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	c := discovery.NewAggregatedDiscoveryServiceClient(conn)
	n := &corev3.Node{Id: node, Cluster: "moat"}
	switch p {
	case sotw:
		st, err := c.StreamAggregatedResources(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("open sotw stream: %w", err)
		}
		return &sotwStream{st: st, node: n, cancel: cancel, acked: map[string]string{}}, nil
	case delta:
		st, err := c.DeltaAggregatedResources(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("open delta stream: %w", err)
		}
		return &deltaStream{st: st, node: n, cancel: cancel}, nil
	}
	cancel()
	return nil, fmt.Errorf("unknown protocol %q", p)
}

type sotwStream struct {
	st     discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *corev3.Node // nil once sent
	cancel context.CancelFunc
	acked  map[string]string // type URL → last ACKed version
}

func (s *sotwStream) send(req *discovery.DiscoveryRequest) error {
	req.Node, s.node = s.node, nil
	return s.st.Send(req)
}

func (s *sotwStream) subscribe(typeURL string) error {
	return s.send(&discovery.DiscoveryRequest{TypeUrl: typeURL})
}

func (s *sotwStream) recv() (response, error) {
	resp, err := s.st.Recv()
	if err != nil {
		return response{}, err
	}
	return response{typeURL: resp.GetTypeUrl(), version: resp.GetVersionInfo(), nonce: resp.GetNonce(), any: resp.GetResources()}, nil
}

func (s *sotwStream) ack(r response) error {
	s.acked[r.typeURL] = r.version
	return s.send(&discovery.DiscoveryRequest{TypeUrl: r.typeURL, VersionInfo: r.version, ResponseNonce: r.nonce})
}

func (s *sotwStream) nack(r response, detail string) error {
	return s.send(&discovery.DiscoveryRequest{
		TypeUrl: r.typeURL, VersionInfo: s.acked[r.typeURL], ResponseNonce: r.nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: detail},
	})
}

func (s *sotwStream) close() { s.cancel() }

type deltaStream struct {
	st     discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *corev3.Node
	cancel context.CancelFunc
}

func (s *deltaStream) send(req *discovery.DeltaDiscoveryRequest) error {
	req.Node, s.node = s.node, nil
	return s.st.Send(req)
}

func (s *deltaStream) subscribe(typeURL string) error {
	return s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL})
}

func (s *deltaStream) recv() (response, error) {
	resp, err := s.st.Recv()
	if err != nil {
		return response{}, err
	}
	r := response{typeURL: resp.GetTypeUrl(), version: resp.GetSystemVersionInfo(), nonce: resp.GetNonce()}
	for _, res := range resp.GetResources() {
		r.names = append(r.names, res.GetName())
	}
	return r, nil
}

func (s *deltaStream) ack(r response) error {
	return s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: r.typeURL, ResponseNonce: r.nonce})
}

func (s *deltaStream) nack(r response, detail string) error {
	return s.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl: r.typeURL, ResponseNonce: r.nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: detail},
	})
}

func (s *deltaStream) close() { s.cancel() }

func resourceName(a *anypb.Any) (string, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return "", fmt.Errorf("unmarshal %s: %w", a.GetTypeUrl(), err)
	}
	n, ok := m.(interface{ GetName() string })
	if !ok {
		return "", fmt.Errorf("%s has no name", a.GetTypeUrl())
	}
	return n.GetName(), nil
}

// testCluster is an original-destination cluster like the one that receives
// redirected traffic; tag makes versions differ.
func testCluster(name, tag string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		AltStatName:          tag,
		ConnectTimeout:       durationpb.New(5 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
}

// testListener is an HTTP listener on port with routes inline: rules routes
// with a path regex each, to cluster.
func testListener(tb testing.TB, name string, port uint32, cluster, tag string, rules int) *listenerv3.Listener {
	tb.Helper()
	vh := &routev3.VirtualHost{Name: "any", Domains: []string{"*"}}
	for i := range rules {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name: fmt.Sprintf("rule-%d", i),
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: fmt.Sprintf("/api/v%d/items/[0-9]+", i)}},
				Headers: []*routev3.HeaderMatcher{{
					Name:                 "x-moat-rule",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
				}},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
			}},
		})
	}
	vh.Routes = append(vh.Routes, &routev3.Route{
		Name:   "deny",
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 403}},
	})
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		tb.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     "moat-" + tag,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{vh}}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
		}}}},
	}
}

// testResources is one listener and one cluster; tag goes into both.
func testResources(tb testing.TB, tag string) map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ClusterType:  {testCluster("moat/egress", tag)},
		resource.ListenerType: {testListener(tb, "moat/egress-http/15001", 15001, "moat/egress", tag, 3)},
	}
}
