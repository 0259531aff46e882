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
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/internal/adsclient"
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

// dial connects to the server's unix socket or, if tcp, its TCP address,
// with the shared test client.
func (s *testServer) dial(tb testing.TB, tcp bool) *adsclient.Conn {
	tb.Helper()
	target := s.socket
	if tcp {
		target = s.TCPAddr().String()
	}
	conn, err := adsclient.Dial(target)
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
	r       *adsclient.Response
}

// resourceNames returns the names of the resources of r.
func (r response) resourceNames() ([]string, error) { return r.r.Names() }

// adsStream is the shared ADS client (internal/adsclient), SotW or delta,
// which sends the node only in its first request, as Envoy does.
type adsStream interface {
	subscribe(typeURL string) error
	recv() (response, error)
	ack(r response) error
	nack(r response, detail string) error
	close()
}

type protocol = adsclient.Protocol

const (
	sotw  = adsclient.SotW
	delta = adsclient.Delta
)

func openStream(ctx context.Context, conn *adsclient.Conn, p protocol, node string) (adsStream, error) {
	st, err := conn.Open(ctx, p, node)
	if err != nil {
		return nil, err
	}
	return clientStream{st}, nil
}

// clientStream adapts *adsclient.Stream to adsStream.
type clientStream struct{ st *adsclient.Stream }

func (c clientStream) subscribe(typeURL string) error { return c.st.Subscribe(typeURL) }

func (c clientStream) recv() (response, error) {
	r, err := c.st.Recv()
	if err != nil {
		return response{}, err
	}
	return response{typeURL: r.TypeURL, version: r.Version, r: r}, nil
}

func (c clientStream) ack(r response) error { return c.st.ACK(r.r) }

func (c clientStream) nack(r response, detail string) error { return c.st.NACK(r.r, detail) }

func (c clientStream) close() { c.st.Close() }

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
