package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// The fakes below stand in for the datapath, the endpoint manager and the
// xDS server, so that the order of reconcile's steps (attach → L3/L4 maps →
// proxy ACK → redirects) and its failures can be checked one by one. The
// real parts are covered by the privileged and e2e tests.

const orderEndpoints = `apiVersion: moat.io/v1alpha1
kind: Endpoints
node: {name: node-1}
endpoints:
- name: web
  labels: {app: web}
  ipv4: 10.1.0.1
- name: client
  labels: {app: client}
  ipv4: 10.1.0.2
`

// orderPolicy lets client reach web on the given L3/L4 ports and, through
// the HTTP proxy, GET / on port 80.
func orderPolicy(l4Ports ...int) string {
	var b strings.Builder
	b.WriteString(`apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/"}]}
`)
	for _, p := range l4Ports {
		fmt.Fprintf(&b, "  - fromEndpoints: [{matchLabels: {app: client}}]\n    toPorts: [{ports: [{port: \"%d\", protocol: TCP}]}]\n", p)
	}
	return b.String()
}

// event is one call the fakes saw, in order.
type event struct {
	kind    string // ensure, attach, detach, remove, sync, serve
	name    string // endpoint (ensure, attach, remove) or version (serve)
	ports   datapath.ProxyPorts
	allowed []int                // sync: web's ingress L3/L4 allow ports
	redir   bool                 // sync: web has an ingress redirect entry
	locals  map[string]policy.ID // sync: the plan's ipcache entries with a local identity
	ifaces  []string
}

type recorder struct {
	mu     sync.Mutex
	events []event
	// fail, when set, fails the call it returns an error for.
	fail func(e event) error
	// changed is closed and replaced on every event.
	changed chan struct{}
	// pinned is what fakeMaps.LocalIdentities returns: the local
	// identities of an earlier agent's pinned ipcache.
	pinned map[netip.Prefix]policy.ID
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) add(e event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if r.fail != nil {
		err = r.fail(e)
	}
	if err == nil {
		r.events = append(r.events, e)
	} else {
		e.kind = "failed " + e.kind
		r.events = append(r.events, e)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return err
}

func (r *recorder) setFail(f func(e event) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]event, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.changed
}

// waitFor waits until cond holds for the events so far.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]event) bool) []event {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		evs, changed := r.snapshot()
		if cond(evs) {
			return evs
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; events:\n%s", what, formatEvents(evs))
		}
	}
}

func formatEvents(evs []event) string {
	var b strings.Builder
	for i, e := range evs {
		fmt.Fprintf(&b, "%2d %s %s", i, e.kind, e.name)
		if strings.HasSuffix(e.kind, "sync") {
			fmt.Fprintf(&b, " ifaces=%v allowed=%v redirect=%v ports=%v", e.ifaces, e.allowed, e.redir, e.ports)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

type fakeMaps struct{ r *recorder }

func (f fakeMaps) Attach(ifindex int) error {
	return f.r.add(event{kind: "attach", name: ifName(ifindex)})
}

func (f fakeMaps) Detach(ifindex int) error {
	return f.r.add(event{kind: "detach", name: ifName(ifindex)})
}

func (f fakeMaps) LocalIdentities() map[netip.Prefix]policy.ID {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return maps.Clone(f.r.pinned)
}

func (f fakeMaps) PatchIPCache(d policy.IPCacheDelta) error {
	return f.r.add(event{kind: "patch-ipcache", name: fmt.Sprintf("+%d-%d", len(d.Put), len(d.Delete))})
}

func (f fakeMaps) Sync(plan *policy.Plan, ifaces map[datapath.EndpointKey]int, proxies datapath.ProxyPorts) error {
	e := event{kind: "sync", ports: maps.Clone(proxies), locals: map[string]policy.ID{}}
	for _, en := range plan.IPCache {
		if en.Identity.IsLocal() {
			e.locals[en.Prefix.String()] = en.Identity
		}
	}
	for k := range ifaces {
		e.ifaces = append(e.ifaces, k.Name)
	}
	slices.Sort(e.ifaces)
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		if _, ok := ifaces[datapath.EndpointKey{Namespace: ep.Namespace, Name: ep.Name}]; !ok || ep.Name != "web" {
			continue
		}
		for _, en := range ep.Ingress.Entries {
			switch en.Verdict {
			case policy.VerdictAllow:
				e.allowed = append(e.allowed, int(en.Ports.From))
			case policy.VerdictRedirect:
				e.redir = true
			}
		}
	}
	slices.Sort(e.allowed)
	return f.r.add(e)
}

var fakeIfindex = map[string]int{"web": 11, "client": 12}

func ifName(idx int) string {
	for n, i := range fakeIfindex {
		if i == idx {
			return n
		}
	}
	return fmt.Sprint(idx)
}

type fakePlumbing struct{ r *recorder }

func (f fakePlumbing) Ensure(_ context.Context, ep policy.Endpoint) (datapath.EndpointLink, error) {
	if err := f.r.add(event{kind: "ensure", name: ep.Name}); err != nil {
		return datapath.EndpointLink{}, err
	}
	return datapath.EndpointLink{Namespace: ep.Namespace, Name: ep.Name, HostIfindex: fakeIfindex[ep.Name]}, nil
}

func (f fakePlumbing) Remove(_ context.Context, ep policy.Endpoint) error {
	return f.r.add(event{kind: "remove", name: ep.Name})
}

func (f fakePlumbing) Config() datapath.EndpointConfig { return datapath.DefaultEndpointConfig() }

// fakeProxy answers WaitForACK as the test says: ACK once released, NACK,
// or never.
type fakeProxy struct {
	r *recorder

	mu      sync.Mutex
	answer  func(version string) error // nil error: ACK; errStall: never
	changed chan struct{}
}

var errStall = errors.New("stall")

func newFakeProxy(r *recorder) *fakeProxy {
	return &fakeProxy{r: r, changed: make(chan struct{}), answer: func(string) error { return errStall }}
}

func (p *fakeProxy) set(answer func(version string) error) {
	p.mu.Lock()
	p.answer = answer
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *fakeProxy) SetResources(_ context.Context, _, version string, _ map[resource.Type][]types.Resource) error {
	return p.r.add(event{kind: "serve", name: version})
}

func (p *fakeProxy) WaitForACK(ctx context.Context, _, version string, _ ...string) error {
	for {
		p.mu.Lock()
		err, changed := p.answer(version), p.changed
		p.mu.Unlock()
		if !errors.Is(err, errStall) {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type orderHarness struct {
	a      *Agent
	r      *recorder
	proxy  *fakeProxy
	policy string
}

func newOrderHarness(t *testing.T, ackTimeout time.Duration) *orderHarness {
	t.Helper()
	dir := t.TempDir()
	h := &orderHarness{r: newRecorder(), policy: filepath.Join(dir, "policies", "web.yaml")}
	cfg := Config{
		Policies:     filepath.Join(dir, "policies"),
		Endpoints:    filepath.Join(dir, "endpoints.yaml"),
		StateDir:     filepath.Join(dir, "state"),
		RunDir:       filepath.Join(dir, "run"),
		PollInterval: Duration(10 * time.Millisecond),
		ACKTimeout:   Duration(ackTimeout),
		NodeName:     "node-1",
	}
	mkdir(t, cfg.Policies)
	writeFile(t, cfg.Endpoints, orderEndpoints)
	a, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := policy.NewFileAllocator(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	a.alloc = alloc
	a.compiler = policy.NewCompiler(policy.Options{}, alloc)
	h.proxy = newFakeProxy(h.r)
	a.maps, a.plumb, a.proxyCfg = fakeMaps{h.r}, fakePlumbing{h.r}, h.proxy
	h.a = a
	return h
}

func (h *orderHarness) appliedGen() uint64 {
	h.a.mu.RLock()
	defer h.a.mu.RUnlock()
	return h.a.proxy.applied
}

// runProxyLoop runs proxyLoop until the test ends.
func (h *orderHarness) runProxyLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.a.proxyLoop(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// apply writes the policy and reconciles once, as policyLoop would.
func (h *orderHarness) apply(t *testing.T, policyYAML string) error {
	t.Helper()
	writeFile(t, h.policy, policyYAML)
	h.a.refreshSources(t.Context())
	return h.a.reconcile(t.Context())
}

func indexOf(evs []event, match func(event) bool) int {
	return slices.IndexFunc(evs, match)
}

func lastSync(evs []event) event {
	for i := len(evs) - 1; i >= 0; i-- {
		if isSync(evs[i]) {
			return evs[i]
		}
	}
	return event{}
}

func isSync(e event) bool { return e.kind == "sync" }

func syncWithPorts(e event) bool { return e.kind == "sync" && len(e.ports) > 0 }

var webIngressHTTP = datapath.ProxyKey{Direction: policy.Ingress, L7: policy.L7HTTP}

// TestReconcileOrder: attach before any map write; every L3/L4 entry and the
// redirect (without a proxy port) in one write, before the proxy ACKs; the
// redirect's port only after the ACK.
func TestReconcileOrder(t *testing.T) {
	h := newOrderHarness(t, time.Hour)
	h.runProxyLoop(t)
	if err := h.apply(t, orderPolicy(9000)); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	// reconcile returned although the proxy has not ACKed (and will not
	// until released): nothing in it waited for the proxy.
	evs, _ := h.r.snapshot()
	first := indexOf(evs, isSync)
	if first < 0 {
		t.Fatalf("no map write before the ACK:\n%s", formatEvents(evs))
	}
	for _, name := range []string{"web", "client"} {
		at := indexOf(evs, func(e event) bool { return e.kind == "attach" && e.name == name })
		if at < 0 || at > first {
			t.Errorf("attach %s at %d, first map write at %d: programs must be on first\n%s", name, at, first, formatEvents(evs))
		}
	}
	s := evs[first]
	if !slices.Equal(s.allowed, []int{9000}) || !s.redir || len(s.ports) != 0 {
		t.Errorf("first write: allowed=%v redirect=%v ports=%v, want the L3/L4 allow 9000 and the redirect without a port", s.allowed, s.redir, s.ports)
	}
	if i := indexOf(evs, syncWithPorts); i >= 0 {
		t.Fatalf("a redirect got its port before the ACK:\n%s", formatEvents(evs))
	}
	if st := h.a.Status(); st.ProxyReady {
		t.Errorf("status proxyReady before the ACK")
	}
	if applied := h.appliedGen(); applied != 0 {
		t.Errorf("plan generation %d confirmed applied before the proxy ACKed", applied)
	}

	// The proxy never ACKs: an L3/L4 revocation and a new allow are
	// written at once all the same.
	if err := h.apply(t, orderPolicy(9001)); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	evs, _ = h.r.snapshot()
	got := lastSync(evs)
	if !slices.Equal(got.allowed, []int{9001}) {
		t.Errorf("after revoking 9000 and allowing 9001 with a stalled proxy: allowed=%v, want [9001]\n%s", got.allowed, formatEvents(evs))
	}

	// The ACK: the redirect gets its port, in a write after it.
	h.proxy.set(func(string) error { return nil })
	evs = h.r.waitFor(t, "the redirect's port after the ACK", func(evs []event) bool { return indexOf(evs, syncWithPorts) >= 0 })
	w := evs[indexOf(evs, syncWithPorts)]
	if w.ports[webIngressHTTP] != h.a.cfg.IngressHTTPPort || !slices.Equal(w.allowed, []int{9001}) {
		t.Errorf("write after the ACK: ports=%v allowed=%v, want ingress http -> %d and the L3/L4 allow kept", w.ports, w.allowed, h.a.cfg.IngressHTTPPort)
	}
	waitStatus(t, h.a, "proxy ready", func(st Status) bool { return st.ProxyReady && st.ProxyError == "" })
	h.a.mu.RLock()
	gen := h.a.state.plan.Generation
	h.a.mu.RUnlock()
	if applied := h.appliedGen(); applied != gen {
		t.Errorf("after the ACK: applied generation %d, want the plan's %d (its dropped identities may be reused)", applied, gen)
	}

	// A later L3/L4 change keeps the live listener's port: no drop of
	// redirected traffic while the proxy takes the new version.
	h.proxy.set(func(string) error { return errStall })
	if err := h.apply(t, orderPolicy(9002)); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	evs, _ = h.r.snapshot()
	got = lastSync(evs)
	if !slices.Equal(got.allowed, []int{9002}) || got.ports[webIngressHTTP] == 0 {
		t.Errorf("L3/L4 change with a live listener: allowed=%v ports=%v, want [9002] and the port kept", got.allowed, got.ports)
	}
}

// TestReconcileFailures fails each step once and checks what is written
// and reported.
func TestReconcileFailures(t *testing.T) {
	t.Run("attach fails", func(t *testing.T) {
		h := newOrderHarness(t, time.Hour)
		h.r.setFail(func(e event) error {
			if e.kind == "attach" && e.name == "web" {
				return errors.New("no tcx")
			}
			return nil
		})
		err := h.apply(t, orderPolicy(9000))
		if err == nil || !strings.Contains(err.Error(), "attach endpoint default/web: no tcx") {
			t.Fatalf("reconcile = %v, want the attach error", err)
		}
		evs, _ := h.r.snapshot()
		rm := indexOf(evs, func(e event) bool { return e.kind == "remove" && e.name == "web" })
		if rm < 0 {
			t.Errorf("the unenforced endpoint was not removed:\n%s", formatEvents(evs))
		}
		s := evs[indexOf(evs, isSync)]
		if !slices.Equal(s.ifaces, []string{"client"}) {
			t.Errorf("map write for %v, want only client (web is not attached)", s.ifaces)
		}
	})

	t.Run("L3/L4 write fails", func(t *testing.T) {
		h := newOrderHarness(t, time.Hour)
		h.r.setFail(func(e event) error {
			if e.kind == "sync" {
				return errors.New("map full")
			}
			return nil
		})
		err := h.apply(t, orderPolicy(9000))
		if err == nil || !strings.Contains(err.Error(), "sync policy maps: map full") {
			t.Fatalf("reconcile = %v, want the sync error", err)
		}
		h.r.setFail(nil)
		// The ACK comes: the next write carries everything, redirects
		// included, and nothing had a port before.
		h.proxy.set(func(string) error { return nil })
		h.runProxyLoop(t)
		evs := h.r.waitFor(t, "a write after the ACK", func(evs []event) bool { return indexOf(evs, syncWithPorts) >= 0 })
		w := evs[indexOf(evs, syncWithPorts)]
		if !slices.Equal(w.allowed, []int{9000}) {
			t.Errorf("write after the ACK: allowed=%v, want [9000]", w.allowed)
		}
	})

	t.Run("proxy NACKs", func(t *testing.T) {
		h := newOrderHarness(t, time.Hour)
		h.proxy.set(func(v string) error {
			return &xds.NACKError{Node: "node-1", Type: resource.ListenerType, Version: v, Detail: "cannot bind"}
		})
		h.runProxyLoop(t)
		if err := h.apply(t, orderPolicy(9000)); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		st := waitStatus(t, h.a, "the NACK reported", func(st Status) bool { return strings.Contains(st.ProxyError, "cannot bind") })
		if st.ProxyReady {
			t.Errorf("proxyReady after a NACK")
		}
		if got := promtestutil.ToFloat64(h.a.m.redirectsFailClosed.WithLabelValues("nack")); got != 1 {
			t.Errorf("fail-closed nack count = %v, want 1", got)
		}
		evs, _ := h.r.snapshot()
		if indexOf(evs, syncWithPorts) >= 0 {
			t.Errorf("a redirect got a port after a NACK:\n%s", formatEvents(evs))
		}
	})

	t.Run("ACK times out after the listener was live", func(t *testing.T) {
		h := newOrderHarness(t, 50*time.Millisecond)
		h.proxy.set(func(v string) error {
			if v == "1" {
				return nil
			}
			return errStall
		})
		h.runProxyLoop(t)
		if err := h.apply(t, orderPolicy(9000)); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		h.r.waitFor(t, "the port after the ACK", func(evs []event) bool { return indexOf(evs, syncWithPorts) >= 0 })
		// A new version (another HTTP path) that the proxy never ACKs: the
		// L3/L4 write keeps the port, then the timeout takes it away.
		n := len(h.r.events)
		if err := h.apply(t, strings.Replace(orderPolicy(9000), `path: "/"`, `path: "/v2"`, 1)); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		evs := h.r.waitFor(t, "the port withdrawn after the timeout", func(evs []event) bool {
			return len(evs) > n && isSync(evs[len(evs)-1]) && len(evs[len(evs)-1].ports) == 0
		})
		st := waitStatus(t, h.a, "the timeout reported", func(st Status) bool { return strings.Contains(st.ProxyError, "did not ACK version 2") })
		if st.ProxyReady {
			t.Errorf("proxyReady after the timeout:\n%s", formatEvents(evs))
		}
		// A late ACK opens the redirects again.
		h.proxy.set(func(string) error { return nil })
		h.r.waitFor(t, "the port back after the late ACK", func(evs []event) bool { return syncWithPorts(evs[len(evs)-1]) })
	})

	t.Run("redirect write fails", func(t *testing.T) {
		h := newOrderHarness(t, time.Hour)
		var once sync.Once
		h.r.setFail(func(e event) error {
			var err error
			if syncWithPorts(e) {
				once.Do(func() { err = errors.New("map busy") })
			}
			return err
		})
		h.proxy.set(func(string) error { return nil })
		if err := h.apply(t, orderPolicy(9000)); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		h.runProxyLoop(t)
		h.r.waitFor(t, "the failed redirect write", func(evs []event) bool {
			return indexOf(evs, func(e event) bool { return e.kind == "failed sync" }) >= 0
		})
		// Retried: the next write succeeds and the proxy is ready.
		h.r.waitFor(t, "the redirect write retried", func(evs []event) bool { return indexOf(evs, syncWithPorts) >= 0 })
		waitStatus(t, h.a, "proxy ready after the retry", func(st Status) bool { return st.ProxyReady })
	})
}

func waitStatus(t *testing.T, a *Agent, what string, cond func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := a.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
}
