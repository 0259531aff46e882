package l7proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/l7proxy"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// waitTimeout bounds every wait; a healthy run takes milliseconds.
const waitTimeout = 20 * time.Second

const node = "node-a"

// Star Wars on loopback: the deathstar upstream listens on 127.0.0.10,
// tiefighter (org=empire) connects from 127.0.0.11, xwing from 127.0.0.12.
var (
	deathstarIP  = netip.MustParseAddr("127.0.0.10")
	tiefighterIP = netip.MustParseAddr("127.0.0.11")
	xwingIP      = netip.MustParseAddr("127.0.0.12")
)

const (
	idDeathstar policy.ID = 300
	idEmpire    policy.ID = 301
	idAlliance  policy.ID = 302
)

// starwarsPlan: org=empire may POST /v1/request-landing on deathstar:port.
func starwarsPlan(port uint16) *policy.Plan {
	ep := func(name string, id policy.ID, a netip.Addr) policy.EndpointPlan {
		return policy.EndpointPlan{Name: name, Namespace: "default", Identity: id, Addresses: []netip.Addr{a}}
	}
	ds := ep("deathstar", idDeathstar, deathstarIP)
	ds.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
		Proto: policy.ProtoTCP, Ports: policy.PortRange{From: port, To: port},
		Rules: []policy.HTTPAllow{{
			Remotes: []policy.ID{idEmpire},
			Rule:    &policy.HTTPRule{Method: "POST", Path: "/v1/request-landing"},
			From:    policy.RuleRef{Policy: "CiliumNetworkPolicy default/rule1", Path: "specs[0].ingress[0]"},
		}},
	}}}
	p := &policy.Plan{Endpoints: []policy.EndpointPlan{ds, ep("tiefighter", idEmpire, tiefighterIP), ep("xwing", idAlliance, xwingIP)}}
	for _, e := range p.Endpoints {
		for _, a := range e.Addresses {
			p.IPCache = append(p.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(a, 32), Identity: e.Identity})
		}
	}
	return p
}

// env is one proxy wired to a real xDS server, an access-log server and an
// upstream.
type env struct {
	t        testing.TB
	xds      *xds.Server
	proxy    *l7proxy.Proxy
	upstream netip.AddrPort
	seen     *upstreamLog
	flows    *flowSink
	version  int
	ecfg     envoy.Config
}

type flowSink struct {
	mu      sync.Mutex
	flows   []flow.Flow
	entries []*accesslogv3.HTTPAccessLogEntry // raw, in arrival order
	added   chan struct{}
	als     *flow.AccessLogServer
}

func (s *flowSink) addEntry(e *accesslogv3.HTTPAccessLogEntry) {
	s.mu.Lock()
	s.entries = append(s.entries, e)
	s.mu.Unlock()
}

// entry returns the last raw access-log entry whose path (query included)
// is path, nil if there is none.
func (s *flowSink) entry(path string) *accesslogv3.HTTPAccessLogEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.entries) - 1; i >= 0; i-- {
		if s.entries[i].GetRequest().GetPath() == path {
			return s.entries[i]
		}
	}
	return nil
}

// recordingALS keeps the raw entries of every message before the flow
// package turns them into flows.
type recordingALS struct {
	alsv3.UnimplementedAccessLogServiceServer
	inner *flow.AccessLogServer
	sink  *flowSink
}

func (r *recordingALS) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	return r.inner.StreamAccessLogs(&recordingStream{AccessLogService_StreamAccessLogsServer: stream, sink: r.sink})
}

type recordingStream struct {
	alsv3.AccessLogService_StreamAccessLogsServer
	sink *flowSink
}

func (s *recordingStream) Recv() (*alsv3.StreamAccessLogsMessage, error) {
	m, err := s.AccessLogService_StreamAccessLogsServer.Recv()
	for _, e := range m.GetHttpLogs().GetLogEntry() {
		s.sink.addEntry(e)
	}
	return m, err
}

func (s *flowSink) add(f flow.Flow) {
	s.mu.Lock()
	s.flows = append(s.flows, f)
	s.mu.Unlock()
	select {
	case s.added <- struct{}{}:
	default:
	}
}

// waitFor returns the flows once pred holds for them.
func (s *flowSink) waitFor(t testing.TB, what string, pred func([]flow.Flow) bool) []flow.Flow {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		s.mu.Lock()
		fs := append([]flow.Flow(nil), s.flows...)
		s.mu.Unlock()
		if pred(fs) {
			return fs
		}
		select {
		case <-s.added:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; have %d flows", what, len(fs))
		}
	}
}

func tempDir(t testing.TB) string {
	t.Helper()
	// Unix socket paths are short; t.TempDir() can be too long.
	dir, err := os.MkdirTemp("", "l7p")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func startXDS(t testing.TB, dir string) *xds.Server {
	t.Helper()
	s, err := xds.New(xds.Config{Socket: filepath.Join(dir, "xds.sock")}, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	runBackground(t, "xds server", s.Run)
	select {
	case <-s.Ready():
	case <-time.After(waitTimeout):
		t.Fatal("xds server not ready")
	}
	return s
}

// runBackground runs fn until the test ends and fails the test on an error.
func runBackground(t testing.TB, what string, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
}

func startALS(t testing.TB, sink *flowSink) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	sink.als = flow.NewAccessLogServer(nil, sink.add, nil)
	alsv3.RegisterAccessLogServiceServer(gs, &recordingALS{inner: sink.als, sink: sink})
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// upstreamLog records the requests the upstream received.
type upstreamLog struct {
	mu   sync.Mutex
	reqs []seenRequest
}

type seenRequest struct {
	method  string
	target  string // request target exactly as received
	upgrade string // Upgrade header
	remote  string // the proxy's upstream connection, as the upstream sees it
}

func (l *upstreamLog) add(r seenRequest) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

// count returns how many requests the upstream received so far.
func (l *upstreamLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// since returns the requests received after the first n.
func (l *upstreamLog) since(n int) []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenRequest(nil), l.reqs[n:]...)
}

// find returns the requests whose target contains s.
func (l *upstreamLog) find(s string) []seenRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []seenRequest
	for _, r := range l.reqs {
		if strings.Contains(r.target, s) {
			out = append(out, r)
		}
	}
	return out
}

// startUpstream serves "<method> <request target>" on 127.0.0.10:0, the
// target exactly as received, and echoes a few request headers back. A
// request with "X-Test-Switch: 1" gets a 101 and then an echo of raw bytes,
// as a back end that opens a tunnel would.
func startUpstream(t testing.TB) (netip.AddrPort, *upstreamLog) {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(deathstarIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	seen := &upstreamLog{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(seenRequest{method: r.Method, target: r.RequestURI, upgrade: r.Header.Get("Upgrade"), remote: r.RemoteAddr})
		if r.Header.Get("X-Test-Switch") == "1" {
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n")
			_ = rw.Flush()
			_, _ = io.Copy(c, rw)
			return
		}
		w.Header().Set("X-Upstream-Host", r.Host)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, r.RequestURI)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()), seen
}

// newEnv starts everything and applies the Star Wars plan.
func newEnv(t testing.TB) *env {
	t.Helper()
	dir := tempDir(t)
	e := &env{t: t, flows: &flowSink{added: make(chan struct{}, 1)}}
	e.xds = startXDS(t, dir)
	alsAddr := startALS(t, e.flows)
	e.upstream, e.seen = startUpstream(t)
	e.ecfg = envoy.Config{NodeName: node, ListenAddresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	e.setPlan(starwarsPlan(e.upstream.Port()))

	up := e.upstream
	p, err := l7proxy.New(l7proxy.Config{
		Node:                node,
		XDSTarget:           filepath.Join(dir, "xds.sock"),
		AccessLogTarget:     alsAddr,
		AdminAddr:           "127.0.0.1:0",
		BackoffMin:          10 * time.Millisecond,
		BackoffMax:          100 * time.Millisecond,
		ListenOverride:      "127.0.0.1:0",
		OriginalDestination: func(net.Conn) (netip.AddrPort, error) { return up, nil },
		SkipSocketOptions:   true,
	}, testLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = p
	runBackground(t, "proxy", p.Run)
	e.waitACK()
	return e
}

// setPlan translates plan and serves it as the next version.
func (e *env) setPlan(plan *policy.Plan) string {
	e.t.Helper()
	res, err := envoy.Translate(plan, e.ecfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.version++
	v := "v" + strconv.Itoa(e.version)
	if err := e.xds.SetResources(context.Background(), node, v, res.ByType()); err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitACK waits until the proxy has subscribed and ACKed the current
// version of every type.
func (e *env) waitACK() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	v := "v" + strconv.Itoa(e.version)
	for {
		err := e.xds.WaitForACK(ctx, node, v)
		if err == nil {
			return
		}
		if ctx.Err() != nil || !isNotSubscribed(err) {
			e.t.Fatalf("wait for ACK of %s: %v", v, err)
		}
		// The proxy has not opened its stream yet: poll.
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func isNotSubscribed(err error) bool { return err != nil && errors.Is(err, xds.ErrNotSubscribed) }

// listener returns the bound address of the ingress listener.
func (e *env) listener() string {
	e.t.Helper()
	name := envoy.ListenerName(policy.Ingress, envoy.DefaultIngressHTTPPort)
	addrs := e.proxy.ListenerAddrs(name)
	if len(addrs) == 0 {
		e.t.Fatalf("listener %s not bound", name)
	}
	return addrs[0].String()
}

// client returns an HTTP client whose connections come from src and go to
// the proxy listener.
func (e *env) client(src netip.Addr) *http.Client {
	target := e.listener()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", target)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// raw sends a hand-written request from src and returns the response.
func (e *env) raw(src netip.Addr, req string) (*http.Response, string) {
	e.t.Helper()
	c := e.dial(src)
	if _, err := io.WriteString(c, req); err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		e.t.Fatalf("read response to %q: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// dial opens a connection from src to the proxy listener, closed when the
// test ends.
func (e *env) dial(src netip.Addr) net.Conn {
	e.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: waitTimeout}
	c, err := d.Dial("tcp", e.listener())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	return c
}

// testLogger discards logs unless L7PROXY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("L7PROXY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
