package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/policy"
)

// kubeAgent is an agent in Kubernetes mode, run in-process with the fake
// node parts of reconcile_test.go (the datapath is covered by the
// privileged tests), read through its local API like `moat status`.
type kubeAgent struct {
	a    *Agent
	r    *recorder
	http *http.Client
	// stop stops the agent and waits for Run to return (once).
	stop func()
}

func startKubeAgent(t *testing.T, cl *k8stest.Cluster, node string, mod func(*Config)) *kubeAgent {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Kubeconfig:   cl.Kubeconfig,
		NodeName:     node,
		StateDir:     filepath.Join(dir, "state"),
		RunDir:       filepath.Join(dir, "run"),
		PollInterval: Duration(50 * time.Millisecond),
		Proxy:        ProxyExternal,
	}
	if mod != nil {
		mod(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", node)
	}
	a, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	a.lockDir = filepath.Join(dir, "lock")
	a.cfg.BPFRoot = "/sys/fs/bpf/moat-unit-" + node
	ka := &kubeAgent{a: a, r: newRecorder()}
	a.openNode = func(context.Context) (*nodeParts, error) {
		return &nodeParts{maps: fakeMaps{ka.r}, plumb: fakePlumbing{ka.r}, close: func() {}}, nil
	}
	sock := filepath.Join(cfg.RunDir, APISocket)
	ka.http = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	ka.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("agent %s: %v", node, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("agent %s did not stop", node)
			}
		})
	}
	t.Cleanup(ka.stop)
	return ka
}

func (k *kubeAgent) get(t *testing.T, path string, v any) bool {
	t.Helper()
	resp, err := k.http.Get("http://agent" + path)
	if err != nil {
		return false // not listening yet
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return true
}

// waitAPI polls the agent's API (the test's view, not the agent's) until
// cond holds.
func (k *kubeAgent) waitAPI(t *testing.T, what string, cond func(st Status, p *policy.Plan) bool) (Status, *policy.Plan) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var st Status
		var p policy.Plan
		okS := k.get(t, "/v1/status", &st)
		okP := k.get(t, "/v1/plan", &p)
		if okS && okP && cond(st, &p) {
			return st, &p
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(st, "", " ")
			t.Fatalf("%s: timed out waiting for %s; status:\n%s", k.a.cfg.NodeName, what, js)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus polls the agent's status until cond holds.
func (k *kubeAgent) waitStatus(t *testing.T, what string, cond func(st Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		var st Status
		if k.get(t, "/v1/status", &st) && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(st, "", " ")
			t.Fatalf("%s: timed out waiting for %s; status:\n%s", k.a.cfg.NodeName, what, js)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (k *kubeAgent) syncs() int {
	evs, _ := k.r.snapshot()
	n := 0
	for _, e := range evs {
		if e.kind == "sync" {
			n++
		}
	}
	return n
}

func planIPCache(p *policy.Plan) map[string]policy.ID {
	out := map[string]policy.ID{}
	for _, e := range p.IPCache {
		out[e.Prefix.String()] = e.Identity
	}
	return out
}

func planEP(p *policy.Plan, ns, name string) *policy.EndpointPlan {
	for i := range p.Endpoints {
		if p.Endpoints[i].Namespace == ns && p.Endpoints[i].Name == name {
			return &p.Endpoints[i]
		}
	}
	return nil
}

// allowedFrom lists the ports an endpoint's direction allows from id.
func allowedFrom(ep *policy.EndpointPlan, d policy.Direction, id policy.ID) []uint16 {
	if ep == nil {
		return nil
	}
	dp := ep.Ingress
	if d == policy.Egress {
		dp = ep.Egress
	}
	var out []uint16
	for _, e := range dp.Entries {
		if e.Identity == id && e.Verdict == policy.VerdictAllow {
			out = append(out, e.Ports.From)
		}
	}
	slices.Sort(out)
	return out
}

func createNode(t *testing.T, cs kubernetes.Interface, name, ip string) {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createPod makes a pod bound to node and gives it ip through the status
// subresource: there is no scheduler or kubelet.
func createPod(t *testing.T, cs kubernetes.Interface, ns, name, node, ip string, labels, annotations map[string]string) {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func kubectlApply(t *testing.T, cl *k8stest.Cluster, body string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "obj.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cl.MustKubectl(t, "apply", "-f", path)
}

const kubeWebPolicy = `apiVersion: moat.io/v1alpha1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "%s", protocol: TCP}]%s}]
  egress:
  - toEntities: [kube-apiserver]
    toPorts: [{ports: [{port: "6443", protocol: TCP}]}]
`

// TestKubernetesTwoAgents: two agents (node-1, node-2) against one real
// apiserver. Pods created through the API become endpoints on their node
// and peers on the other; a policy add, update and delete reaches both
// Plans (read through the agent API); a bad update is reported with its
// field path while the previous version stays in force; an apiserver
// restart changes nothing (no Sync at all) and the status says since when
// the sources were stale.
func TestKubernetesTwoAgents(t *testing.T) {
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "../charts/moat/crds")
	cs := cl.Client(t)
	createNode(t, cs, "node-1", "192.168.60.1")
	createNode(t, cs, "node-2", "192.168.60.2")
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager makes the default service account pods need.
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// web (node-1) has a host interface to adopt; client (node-2) does not.
	createPod(t, cs, "shop", "web", "node-1", "10.2.1.10", map[string]string{"app": "web"}, map[string]string{"moat.io/interface": "lxcweb"})
	createPod(t, cs, "shop", "client", "node-2", "10.2.2.10", map[string]string{"app": "client", "pod-template-hash": "x1"}, nil)

	a1 := startKubeAgent(t, cl, "node-1", nil)
	a2 := startKubeAgent(t, cl, "node-2", nil)

	// Before any policy: each node has its own pod, the other's as a peer.
	a1.waitAPI(t, "web local, client a peer", func(st Status, p *policy.Plan) bool {
		return planEP(p, "shop", "web") != nil && planEP(p, "shop", "client") == nil && planIPCache(p)["10.2.2.10/32"] >= policy.IDFirstAllocated
	})
	a2.waitAPI(t, "client local, web a peer", func(st Status, p *policy.Plan) bool {
		return planEP(p, "shop", "client") != nil && planEP(p, "shop", "web") == nil && planIPCache(p)["10.2.1.10/32"] >= policy.IDFirstAllocated
	})
	a1.r.waitFor(t, "web attached through its annotation", func(evs []event) bool {
		return slices.ContainsFunc(evs, func(e event) bool { return e.kind == "attach" && e.name == "web" })
	})

	// Add.
	start := time.Now()
	kubectlApply(t, cl, fmt.Sprintf(kubeWebPolicy, "80", ""))
	var clientOn1 policy.ID
	st1, p1 := a1.waitAPI(t, "web allows client on 80", func(st Status, p *policy.Plan) bool {
		clientOn1 = planIPCache(p)["10.2.2.10/32"]
		return slices.Equal(allowedFrom(planEP(p, "shop", "web"), policy.Ingress, clientOn1), []uint16{80})
	})
	t.Logf("kubectl apply → node-1 plan (through the agent API): %s", time.Since(start).Round(time.Millisecond))
	if st1.Mode != "kubernetes" || st1.Policies != 1 || st1.Identities < 2 || !st1.SourcesSynced {
		t.Errorf("node-1 status: mode %q, policies %d, identities %d, synced %v; want kubernetes, 1, >= 2, true", st1.Mode, st1.Policies, st1.Identities, st1.SourcesSynced)
	}
	if got := allowedFrom(planEP(p1, "shop", "web"), policy.Egress, policy.IDKubeAPIServer); !slices.Equal(got, []uint16{6443}) {
		t.Errorf("web egress to kube-apiserver = %v, want [6443]", got)
	}
	if planIPCache(p1)["192.168.60.2/32"] != policy.IDRemoteNode || planIPCache(p1)["192.168.60.1/32"] != policy.IDHost {
		t.Errorf("node addresses in node-1's ipcache: %v", planIPCache(p1))
	}
	// The allocator's metrics are on the agent's registry.
	if v := gaugeValue(t, a1.a.Registry(), "moat_identity_referenced_label_sets"); v < 2 {
		t.Errorf("moat_identity_referenced_label_sets = %v on node-1, want at least its 2 label sets", v)
	}
	_, p2 := a2.waitAPI(t, "node-2 has the policy", func(st Status, p *policy.Plan) bool { return st.Policies == 1 })
	// Cluster-wide identities: the same number for client on both nodes
	// (local on node-2, a peer on node-1), and for web.
	if c2 := planEP(p2, "shop", "client"); c2 == nil || c2.Identity != clientOn1 {
		t.Errorf("client's identity on node-2 %+v, on node-1 %d: want the same number", c2, clientOn1)
	}
	if w1, w2 := planEP(p1, "shop", "web").Identity, planIPCache(p2)["10.2.1.10/32"]; w1 != w2 {
		t.Errorf("web's identity on node-1 %d, on node-2 %d: want the same number", w1, w2)
	}

	// Update.
	kubectlApply(t, cl, fmt.Sprintf(kubeWebPolicy, "8080", ""))
	a1.waitAPI(t, "web allows client on 8080", func(st Status, p *policy.Plan) bool {
		return slices.Equal(allowedFrom(planEP(p, "shop", "web"), policy.Ingress, clientOn1), []uint16{8080})
	})

	// A bad update the CRD's schema cannot reject (regex syntax): reported
	// with the field path; 8080 stays.
	kubectlApply(t, cl, fmt.Sprintf(kubeWebPolicy, "8081", `, rules: {http: [{path: "(" }]}`))
	for _, a := range []*kubeAgent{a1, a2} {
		st, p := a.waitAPI(t, "the bad update reported", func(st Status, p *policy.Plan) bool { return len(st.PolicyErrors) == 1 })
		want := "NetworkPolicy.moat.io shop/web: spec.ingress[0].toPorts[0].rules.http[0].path"
		if !strings.Contains(st.PolicyErrors[0], want) || !strings.Contains(st.PolicyErrors[0], "previous version") {
			t.Errorf("%s: policy error %q, want it to name %q and say the previous version stays", a.a.cfg.NodeName, st.PolicyErrors[0], want)
		}
		if a == a1 {
			if got := allowedFrom(planEP(p, "shop", "web"), policy.Ingress, clientOn1); !slices.Equal(got, []uint16{8080}) {
				t.Errorf("after the bad update web allows %v, want the previous [8080]", got)
			}
		}
	}

	// The apiserver goes away and comes back: the status says since when
	// the sources were stale, and nothing is written meanwhile or after
	// (the relist finds nothing changed).
	syncs1, syncs2 := a1.syncs(), a2.syncs()
	cl.StopAPIServer()
	stopped := time.Now()
	st, _ := a1.waitAPI(t, "sources stale", func(st Status, _ *policy.Plan) bool { return !st.SourcesStaleSince.IsZero() })
	if st.SourcesStaleSince.Before(stopped.Add(-time.Second)) {
		t.Errorf("stale since %s, before the apiserver stopped at %s", st.SourcesStaleSince, stopped)
	}
	t.Logf("stale reported %s after the stop", st.SourcesStaleSince.Sub(stopped).Round(time.Millisecond))
	if err := cl.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*kubeAgent{a1, a2} {
		a.waitAPI(t, "sources fresh again", func(st Status, _ *policy.Plan) bool { return st.SourcesStaleSince.IsZero() })
	}
	// Positive control: a change after the restart still arrives.
	kubectlApply(t, cl, fmt.Sprintf(kubeWebPolicy, "9090", ""))
	a1.waitAPI(t, "web allows client on 9090 after the restart", func(st Status, p *policy.Plan) bool {
		return len(st.PolicyErrors) == 0 && slices.Equal(allowedFrom(planEP(p, "shop", "web"), policy.Ingress, clientOn1), []uint16{9090})
	})
	a2.waitAPI(t, "node-2: the error gone", func(st Status, p *policy.Plan) bool { return len(st.PolicyErrors) == 0 })
	if got := a1.syncs() - syncs1; got != 1 {
		t.Errorf("node-1: %d map syncs across the apiserver restart and one policy change, want exactly 1 (the change)", got)
	}
	if got := a2.syncs() - syncs2; got > 1 {
		t.Errorf("node-2: %d map syncs across the apiserver restart and one policy change, want at most 1", got)
	}

	// Delete: both plans lose it.
	cl.MustKubectl(t, "delete", "networkpolicies.moat.io", "-n", "shop", "web")
	for _, a := range []*kubeAgent{a1, a2} {
		a.waitAPI(t, "the policy deleted", func(st Status, p *policy.Plan) bool {
			web := planEP(p, "shop", "web")
			return st.Policies == 0 && (web == nil || !web.Ingress.Enforced)
		})
	}
}

// TestKubernetesRestartWaitsForTheAPI: an agent that restarts while the
// apiserver is down changes no map (its sources are not synced: the pins
// keep enforcing); when the API answers, its first Sync carries the whole
// plan, the same as before the restart.
func TestKubernetesRestartWaitsForTheAPI(t *testing.T) {
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "../charts/moat/crds")
	cs := cl.Client(t)
	createNode(t, cs, "node-1", "192.168.61.1")
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("shop").Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createPod(t, cs, "shop", "web", "node-1", "10.3.1.10", map[string]string{"app": "web"}, map[string]string{"moat.io/interface": "lxcweb"})
	createPod(t, cs, "shop", "client", "node-1", "10.3.1.11", map[string]string{"app": "client"}, nil)
	kubectlApply(t, cl, fmt.Sprintf(kubeWebPolicy, "80", ""))

	// fakeMaps records web's ingress allows of every Sync.
	webSync := func(r *recorder) (int, []int) {
		evs, _ := r.snapshot()
		n, last := 0, []int(nil)
		for _, e := range evs {
			if e.kind == "sync" {
				n++
				last = e.allowed
			}
		}
		return n, last
	}
	a := startKubeAgent(t, cl, "node-1", nil)
	a.r.waitFor(t, "web's allow on 80 synced", func([]event) bool {
		_, last := webSync(a.r)
		return slices.Equal(last, []int{80})
	})
	a.stop()

	cl.StopAPIServer()
	b := startKubeAgent(t, cl, "node-1", nil)
	b.waitStatus(t, "the restarted agent's API: not synced, stale", func(st Status) bool {
		return !st.SourcesSynced && !st.SourcesStaleSince.IsZero() && st.Revision == 0
	})
	// Give it time to do something wrong: a second of polling.
	time.Sleep(time.Second)
	if n, _ := webSync(b.r); n != 0 {
		t.Fatalf("the restarted agent synced %d times while the API was down; want none", n)
	}
	if err := cl.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	b.r.waitFor(t, "the first sync after the API answers", func([]event) bool { n, _ := webSync(b.r); return n > 0 })
	evs, _ := b.r.snapshot()
	for _, e := range evs {
		if e.kind == "sync" {
			if !slices.Equal(e.allowed, []int{80}) || !slices.Contains(e.ifaces, "web") {
				t.Errorf("first sync after the restart: web allows %v on %v, want the whole plan ([80] on web)", e.allowed, e.ifaces)
			}
			break
		}
	}
}

// TestKubernetesConfigMapChanges: the agent watches its ConfigMap; a bad
// change is reported naming the key or field and the running configuration
// stays; a good one is reported as pending a restart.
func TestKubernetesConfigMapChanges(t *testing.T) {
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "../charts/moat/crds")
	cs := cl.Client(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "moat-config", Namespace: "kube-system"}, Data: map[string]string{"flowBuffer": "100"}}
	if _, err := cs.CoreV1().ConfigMaps("kube-system").Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What cmd/moat-agent does at start: the ConfigMap over the file.
	base, err := ApplyConfigMap(Config{}, "kube-system/moat-config", cm.Data)
	if err != nil || base.FlowBuffer != 100 {
		t.Fatalf("ApplyConfigMap = %+v, %v; want flowBuffer 100", base.FlowBuffer, err)
	}
	a := startKubeAgent(t, cl, "node-1", func(c *Config) {
		c.ConfigMap = "kube-system/moat-config"
		c.FlowBuffer = base.FlowBuffer
	})
	a.waitAPI(t, "synced, no config error", func(st Status, _ *policy.Plan) bool { return st.SourcesSynced && st.ConfigError == "" })
	for _, tc := range []struct {
		data map[string]string
		want []string
	}{
		{map[string]string{"flowBuffer": "-1"}, []string{"flowBuffer: -1: must be at least 1", "the running configuration stays"}},
		{map[string]string{"flowBuffer": "100", "flowBufer": "7"}, []string{`unknown field "flowBufer"`, "the running configuration stays"}},
		{map[string]string{"flowBuffer": "many"}, []string{"flowBuffer", "the running configuration stays"}},
		{map[string]string{"flowBuffer": "200"}, []string{"changed: restart the agent to apply it"}},
		{map[string]string{"flowBuffer": "100"}, nil},
	} {
		cm.Data = tc.data
		if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		st, _ := a.waitAPI(t, fmt.Sprintf("config error for %v", tc.data), func(st Status, _ *policy.Plan) bool {
			if tc.want == nil {
				return st.ConfigError == ""
			}
			for _, w := range tc.want {
				if !strings.Contains(st.ConfigError, w) {
					return false
				}
			}
			return true
		})
		t.Logf("%v → %q", tc.data, st.ConfigError)
		if a.a.cfg.FlowBuffer != 100 {
			t.Fatalf("running flowBuffer %d, want 100 (a ConfigMap change applies at restart)", a.a.cfg.FlowBuffer)
		}
	}
}

// gaugeValue reads an unlabelled gauge from reg (-1 when it is missing).
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
