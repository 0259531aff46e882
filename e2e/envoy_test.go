package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	gproto "google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/adsclient"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policyload"
	"github.com/moatnet/moat/xds"
)

// envoyBinEnv names the Envoy executable that TestEnvoyBinary runs.
const envoyBinEnv = "ENVOY_BIN"

// conflictListener is the listener that the second version adds on a port
// the test holds open, so that a real Envoy rejects it.
const conflictListener = "moat/e2e-conflict"

// TestEnvoyBinary drives a real Envoy with moat's xDS server: the Star Wars
// example's plan, translated by envoy.Translate, served over ADS on a unix
// socket; a bootstrap from envoy.Bootstrap (admin on a unix socket, access
// logs to a flow.AccessLogServer on another); Envoy run by
// envoy.Supervisor. It waits until Envoy ACKs every type and its
// /config_dump is SYNCED with the intended resources for every type, then
// pushes a version with a listener on a port the test holds and checks that
// Envoy's NACK, with Envoy's own detail, reaches WaitForACK, Status and
// CompareSync.
//
// It is an optional test, gated on the environment, not a privileged one:
// it runs only when ENVOY_BIN names an Envoy binary, and skips otherwise.
// The listeners moat emits are IP_TRANSPARENT, so Envoy needs
// CAP_NET_ADMIN (run as root). Run it with
//
//	ENVOY_BIN=/usr/local/bin/envoy go test ./e2e -run TestEnvoyBinary -v
//
// TestEnvoyBinaryPrerequisites runs everything but the Envoy process on
// every `go test`.
func TestEnvoyBinary(t *testing.T) {
	bin := os.Getenv(envoyBinEnv)
	if bin == "" {
		t.Skipf("%s is not set: set it to an Envoy binary to run this test (%s=/usr/local/bin/envoy go test ./e2e -run TestEnvoyBinary -v)", envoyBinEnv, envoyBinEnv)
	}
	f := newEnvoyFixture(t)
	ctx, cancel := context.WithTimeout(t.Context(), xdsWaitTimeout)
	defer cancel()

	sup, err := envoy.NewSupervisor(envoy.SupervisorConfig{
		Binary:        bin,
		BootstrapPath: f.bootstrapPath,
		AdminAddr:     f.adminSocket,
		BaseID:        uint32(os.Getpid()),
		Concurrency:   1,
		DrainTime:     time.Second,
		StopTimeout:   5 * time.Second,
		Output:        t.Output(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-supDone; err != nil {
			t.Errorf("supervise envoy: %v", err)
		}
	})

	// Envoy subscribes, ACKs every type, and runs exactly what is intended.
	if err := waitSubscribedACK(ctx, f.xds, f.node, "1"); err != nil {
		t.Fatalf("envoy did not ACK version 1: %v", err)
	}
	for _, typeURL := range slices.Sorted(maps.Keys(f.intended)) {
		if err := f.xds.WaitForACK(ctx, f.node, "1", typeURL); err != nil {
			t.Fatalf("WaitForACK(1, %s): %v", typeURL, err)
		}
	}
	admin, err := envoy.NewAdminClient(f.adminSocket)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	waitConfigDump(ctx, t, admin, f.intended, func(ts []envoy.TypeSync) error { return everyTypeSynced(ts, f.intended) })

	// Version 2 adds a listener on a port the test holds: Envoy cannot bind
	// it and NACKs the listeners.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	v2 := f.withConflict(t, held.Addr().(*net.TCPAddr).AddrPort())
	if err := f.xds.SetResources(ctx, f.node, "2", v2); err != nil {
		t.Fatal(err)
	}
	nack := wantNACK(t, f.xds.WaitForACK(ctx, f.node, "2"), f.node)
	if !strings.Contains(nack.Detail, conflictListener) {
		t.Errorf("NACK detail %q does not name listener %s", nack.Detail, conflictListener)
	}
	t.Logf("envoy's NACK: %s", nack.Detail)
	checkStatusNACK(t, f.xds, f.node, nack.Detail)
	// Envoy's config dump keeps the listener's own error, which need not
	// repeat the NACK's wording.
	waitConfigDump(ctx, t, admin, v2, func(ts []envoy.TypeSync) error {
		return listenerNACKed(ts, func(d string) bool { return d != "" })
	})
}

// TestEnvoyBinaryPrerequisites checks everything TestEnvoyBinary needs
// except the Envoy process, on every run: the bootstrap file, the Star Wars
// plan's resources, and the xDS path end to end with internal/adsclient in
// Envoy's place (SotW and delta): it ACKs the first version, and CompareSync
// of the served resources against a config dump built from what the client
// received (served by admintest and read with envoy.AdminClient) is SYNCED;
// then it NACKs the conflicting listener of the second version as Envoy
// would, and the NACK reaches WaitForACK, Status and CompareSync.
func TestEnvoyBinaryPrerequisites(t *testing.T) {
	t.Run("bootstrap", func(t *testing.T) {
		f := newEnvoyFixture(t)
		data, err := os.ReadFile(f.bootstrapPath)
		if err != nil {
			t.Fatal(err)
		}
		var read bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(data, &read); err != nil {
			t.Fatalf("parse bootstrap file: %v", err)
		}
		if !gproto.Equal(&read, f.bootstrap) {
			t.Errorf("bootstrap file differs from envoy.Bootstrap's result")
		}
		if err := read.ValidateAll(); err != nil {
			t.Errorf("validate bootstrap file: %v", err)
		}
		if got := read.GetNode().GetId(); got != f.node {
			t.Errorf("node id = %q, want %q", got, f.node)
		}
		if got := read.GetAdmin().GetAddress().GetPipe().GetPath(); got != f.adminSocket {
			t.Errorf("admin pipe = %q, want %q", got, f.adminSocket)
		}
		pipes := map[string]string{}
		for _, c := range read.GetStaticResources().GetClusters() {
			for _, le := range c.GetLoadAssignment().GetEndpoints() {
				for _, e := range le.GetLbEndpoints() {
					pipes[c.GetName()] = e.GetEndpoint().GetAddress().GetPipe().GetPath()
				}
			}
		}
		for cluster, want := range map[string]string{envoy.XDSClusterName: f.xdsSocket, envoy.DefaultAccessLogCluster: f.alsSocket} {
			if pipes[cluster] != want {
				t.Errorf("cluster %s reaches %q, want %q", cluster, pipes[cluster], want)
			}
		}
	})

	t.Run("resources", func(t *testing.T) {
		f := newEnvoyFixture(t)
		for _, typeURL := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType} {
			if len(f.intended[typeURL]) == 0 {
				t.Errorf("no %s resources for the Star Wars plan", envoy.SyncTypeName(typeURL))
			}
		}
		if _, err := f.translate(t, nil); err != nil {
			t.Fatal(err)
		}
	})

	for _, p := range []adsclient.Protocol{adsclient.SotW, adsclient.Delta} {
		t.Run("serve/"+string(p), func(t *testing.T) {
			f := newEnvoyFixture(t)
			ctx, cancel := context.WithTimeout(t.Context(), xdsWaitTimeout)
			defer cancel()
			conn, err := adsclient.Dial(f.xdsSocket)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			st, err := conn.Open(ctx, p, f.node)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			px := newFakeProxy(st)
			go px.run()
			if err := px.subscribe(typedResourceNames(f.intended[resource.RouteType])); err != nil {
				t.Fatal(err)
			}

			// Version 1: ACKed for every type, and SYNCED.
			if err := waitSubscribedACK(ctx, f.xds, f.node, "1"); err != nil {
				t.Fatalf("version 1: %v", err)
			}
			for _, typeURL := range slices.Sorted(maps.Keys(f.intended)) {
				if err := f.xds.WaitForACK(ctx, f.node, "1", typeURL); err != nil {
					t.Fatalf("WaitForACK(1, %s): %v", typeURL, err)
				}
			}
			adminSrv := admintest.New()
			admin, err := envoy.NewAdminClient(adminSrv.ServeUnix(t))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			dump, err := px.dump()
			if err != nil {
				t.Fatal(err)
			}
			adminSrv.SetDump(dump)
			waitConfigDump(ctx, t, admin, f.intended, func(ts []envoy.TypeSync) error { return everyTypeSynced(ts, f.intended) })

			// Version 2: the proxy rejects the conflicting listener.
			v2 := f.withConflict(t, netip.MustParseAddrPort("127.0.0.1:1"))
			if err := f.xds.SetResources(ctx, f.node, "2", v2); err != nil {
				t.Fatal(err)
			}
			nack := wantNACK(t, f.xds.WaitForACK(ctx, f.node, "2"), f.node)
			if nack.Detail != px.rejection() {
				t.Errorf("NACK detail = %q, want %q", nack.Detail, px.rejection())
			}
			checkStatusNACK(t, f.xds, f.node, nack.Detail)
			if dump, err = px.dump(); err != nil {
				t.Fatal(err)
			}
			adminSrv.SetDump(dump)
			waitConfigDump(ctx, t, admin, v2, func(ts []envoy.TypeSync) error {
				return listenerNACKed(ts, func(d string) bool { return d == nack.Detail })
			})
			if err := px.err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// envoyFixture is what both Envoy tests set up: the Star Wars plan and its
// resources (version 1) on an xds.Server, an access-log server, and the
// bootstrap file, all on unix sockets in the test's temp dir.
type envoyFixture struct {
	node          string
	cfg           envoy.Config
	plan          *policy.Plan
	intended      map[resource.Type][]types.Resource // version 1
	xds           *xds.Server
	xdsSocket     string
	alsSocket     string
	adminSocket   string
	bootstrap     *bootstrapv3.Bootstrap
	bootstrapPath string
}

func newEnvoyFixture(t *testing.T) *envoyFixture {
	t.Helper()
	dir := t.TempDir()
	policies, err := policyload.Load(filepath.Join("..", "examples", "starwars", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	eps, err := policyload.LoadEndpoints(filepath.Join("..", "examples", "starwars", "endpoints.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := policy.Compile(policy.Input{Policies: policies, Endpoints: eps.Endpoints, Namespaces: eps.Namespaces, Node: eps.Node})
	if err != nil {
		t.Fatal(err)
	}
	f := &envoyFixture{
		node: eps.Node.Name,
		plan: plan,
		// Ports nobody listens on, on loopback: the test must not take the
		// node's real proxy ports.
		cfg: envoy.Config{
			NodeName:        eps.Node.Name,
			EgressHTTPPort:  pickLoopbackPort(t),
			IngressHTTPPort: pickLoopbackPort(t),
			ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		},
		xdsSocket:   filepath.Join(dir, "xds.sock"),
		alsSocket:   filepath.Join(dir, "accesslog.sock"),
		adminSocket: filepath.Join(dir, "envoy-admin.sock"),
	}
	if f.node == "" {
		t.Fatal("the Star Wars endpoints file names no node")
	}
	res, err := f.translate(t, plan)
	if err != nil {
		t.Fatal(err)
	}
	f.intended = res.ByType()

	f.xds = runXDSServer(t, f.xdsSocket)
	if err := f.xds.SetResources(t.Context(), f.node, "1", f.intended); err != nil {
		t.Fatal(err)
	}
	serveALS(t, f.alsSocket)

	f.bootstrap, err = envoy.Bootstrap(envoy.BootstrapConfig{
		NodeName:        f.node,
		XDSSocket:       f.xdsSocket,
		AccessLogSocket: f.alsSocket,
		AdminSocket:     f.adminSocket,
		StatsAddress:    netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), pickLoopbackPort(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := envoy.BootstrapJSON(f.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	f.bootstrapPath = filepath.Join(dir, "envoy.json")
	if err := os.WriteFile(f.bootstrapPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// translate translates plan (the fixture's own when nil) and validates the
// result.
func (f *envoyFixture) translate(t *testing.T, plan *policy.Plan) (*envoy.Resources, error) {
	t.Helper()
	if plan == nil {
		plan = f.plan
	}
	res, err := envoy.Translate(plan, f.cfg)
	if err != nil {
		return nil, fmt.Errorf("translate the star wars plan: %w", err)
	}
	if err := res.Validate(); err != nil {
		return nil, fmt.Errorf("validate the star wars resources: %w", err)
	}
	return res, nil
}

// withConflict returns version 1's resources plus conflictListener on addr:
// a copy of the first listener that differs only in name and address.
func (f *envoyFixture) withConflict(t *testing.T, addr netip.AddrPort) map[resource.Type][]types.Resource {
	t.Helper()
	ls := f.intended[resource.ListenerType]
	if len(ls) == 0 {
		t.Fatal("no listener to copy")
	}
	l := gproto.Clone(ls[0].(*listenerv3.Listener)).(*listenerv3.Listener)
	l.Name = conflictListener
	l.AdditionalAddresses = nil
	l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr.Addr().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(addr.Port())},
	}}}
	out := make(map[resource.Type][]types.Resource, len(f.intended))
	for typeURL, rs := range f.intended {
		out[typeURL] = slices.Clone(rs)
	}
	out[resource.ListenerType] = append(out[resource.ListenerType], l)
	return out
}

// runXDSServer runs an xds.Server on socket until tb ends.
func runXDSServer(tb testing.TB, socket string) *xds.Server {
	tb.Helper()
	s, err := xds.New(xds.Config{Socket: socket}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			tb.Errorf("run xds server: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-errc:
		tb.Fatalf("run xds server: %v", err)
	case <-time.After(xdsWaitTimeout):
		tb.Fatal("xds server not ready")
	}
	return s
}

// serveALS runs a flow.AccessLogServer on socket until t ends.
func serveALS(t *testing.T, socket string) {
	t.Helper()
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	flow.NewAccessLogServer(nil, func(flow.Flow) {}, slog.New(slog.DiscardHandler)).Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(ln) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("serve access logs: %v", err)
		}
	})
}

// pickLoopbackPort returns a loopback TCP port that was free a moment ago.
func pickLoopbackPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).AddrPort().Port()
}

// waitSubscribedACK waits for node to ACK version (every type), first
// waiting for the node to connect at all: WaitForACK does not wait for a
// node that never subscribed.
func waitSubscribedACK(ctx context.Context, s *xds.Server, node, version string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.WaitForACK(ctx, node, version)
		if !errors.Is(err, xds.ErrNotSubscribed) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for node %q to subscribe: %w", node, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitConfigDump polls the admin interface's config dump until check accepts
// CompareSync's result against intended, or fails the test at ctx's end.
func waitConfigDump(ctx context.Context, t *testing.T, admin *envoy.AdminClient, intended map[resource.Type][]types.Resource, check func([]envoy.TypeSync) error) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		dump, err := admin.ConfigDump(ctx, "")
		if err == nil {
			var ts []envoy.TypeSync
			if ts, err = envoy.CompareSync(intended, dump); err == nil {
				if err = check(ts); err == nil {
					return
				}
			}
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("config dump never matched: %v", last)
		case <-tick.C:
		}
	}
}

// everyTypeSynced accepts a comparison where every type is SYNCED and every
// intended resource is applied.
func everyTypeSynced(ts []envoy.TypeSync, intended map[resource.Type][]types.Resource) error {
	var errs []error
	seen := map[string]bool{}
	for _, s := range ts {
		seen[s.TypeURL] = true
		if s.State != envoy.SyncSynced || s.Applied != len(intended[s.TypeURL]) {
			errs = append(errs, fmt.Errorf("%s: %s", envoy.SyncTypeName(s.TypeURL), s.Summary()))
		}
	}
	for typeURL := range intended {
		if !seen[typeURL] {
			errs = append(errs, fmt.Errorf("%s: not compared", envoy.SyncTypeName(typeURL)))
		}
	}
	return errors.Join(errs...)
}

// listenerNACKed accepts a comparison where the listeners are NACKED with
// a rejection of conflictListener whose details detailOK accepts, and the
// other types SYNCED.
func listenerNACKed(ts []envoy.TypeSync, detailOK func(string) bool) error {
	var errs []error
	for _, s := range ts {
		if s.TypeURL != resource.ListenerType {
			if s.State != envoy.SyncSynced {
				errs = append(errs, fmt.Errorf("%s: %s", envoy.SyncTypeName(s.TypeURL), s.Summary()))
			}
			continue
		}
		found := slices.ContainsFunc(s.NACKs, func(n envoy.ResourceNACK) bool {
			return n.Name == conflictListener && detailOK(n.Details)
		})
		if s.State != envoy.SyncNACKed || !found || !slices.Equal(s.Missing, []string{conflictListener}) {
			errs = append(errs, fmt.Errorf("listeners: %s, want NACKED with the rejection of %s only", s.Summary(), conflictListener))
		}
	}
	return errors.Join(errs...)
}

// wantNACK checks that err is the listeners' NACK of node and returns it.
func wantNACK(t *testing.T, err error, node string) *xds.NACKError {
	t.Helper()
	var nack *xds.NACKError
	if !errors.As(err, &nack) {
		t.Fatalf("WaitForACK(2) = %v, want a NACK", err)
	}
	if nack.Node != node || nack.Type != resource.ListenerType || nack.Version != "2" || nack.Detail == "" {
		t.Fatalf("NACK = %+v, want node %s rejecting listeners of version 2 with a detail", *nack, node)
	}
	return nack
}

// checkStatusNACK checks that Status reports the listeners' NACK.
func checkStatusNACK(t *testing.T, s *xds.Server, node, detail string) {
	t.Helper()
	for _, ns := range s.Status() {
		if ns.Node != node {
			continue
		}
		for _, ts := range ns.Types {
			if ts.TypeURL != resource.ListenerType {
				continue
			}
			if ts.ACKed != "1" || ts.LastNACK == nil || ts.LastNACK.Version != "2" || ts.LastNACK.Detail != detail {
				t.Errorf("listener status = %+v (NACK %+v), want ACKed 1 and the NACK of 2", ts, ts.LastNACK)
			}
			return
		}
	}
	t.Errorf("status has no listeners of node %s: %+v", node, s.Status())
}

// fakeProxy plays Envoy over an adsclient stream: it keeps what it accepted
// per type, rejects any listener response that carries conflictListener
// (as Envoy does when it cannot bind it), and renders what it runs as a
// config dump.
type fakeProxy struct {
	st *adsclient.Stream

	mu      sync.Mutex
	applied *adsclient.State
	failed  *adsclient.Response // last rejected listener response
	runErr  error
}

func newFakeProxy(st *adsclient.Stream) *fakeProxy {
	return &fakeProxy{st: st, applied: adsclient.NewState()}
}

func (p *fakeProxy) subscribe(routes []string) error {
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := p.st.Subscribe(typeURL); err != nil {
			return err
		}
	}
	return p.st.Subscribe(resource.RouteType, routes...)
}

func (p *fakeProxy) rejection() string {
	return fmt.Sprintf("Error adding/updating listener(s) %s: cannot bind: Address already in use", conflictListener)
}

func (p *fakeProxy) run() {
	err := p.st.Serve(func(r *adsclient.Response) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		names, err := r.Names()
		if err != nil {
			return err
		}
		if r.TypeURL == resource.ListenerType && slices.Contains(names, conflictListener) {
			p.failed = r
			return errors.New(p.rejection())
		}
		return p.applied.Apply(r)
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	if status.Code(err) != codes.Canceled {
		p.runErr = err
	}
}

func (p *fakeProxy) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runErr
}

// dump renders the accepted resources, and the rejected listener, the way
// Envoy's /config_dump does.
func (p *fakeProxy) dump() (*adminv3.ConfigDump, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := admintest.NewDump().Bootstrap("fake-proxy")
	for _, typeURL := range p.applied.Types() {
		version := p.applied.Version(typeURL)
		res := p.applied.Resources(typeURL)
		for _, name := range slices.Sorted(maps.Keys(res)) {
			m, err := res[name].UnmarshalNew()
			if err != nil {
				return nil, fmt.Errorf("decode %s %s: %w", typeURL, name, err)
			}
			switch m := m.(type) {
			case *listenerv3.Listener:
				b.Listener(version, m)
			case *clusterv3.Cluster:
				b.Cluster(version, m)
			case *routev3.RouteConfiguration:
				b.Route(version, m)
			default:
				return nil, fmt.Errorf("unexpected resource type %s", typeURL)
			}
		}
	}
	if p.failed != nil {
		msgs, err := p.failed.Messages()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if l := m.(*listenerv3.Listener); l.GetName() == conflictListener {
				b.ListenerError(p.failed.Version, p.rejection(), l)
			}
		}
	}
	return b.Build(), nil
}
