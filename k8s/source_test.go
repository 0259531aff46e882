package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/policy"
)

// driver runs a Source into a Compiler the way the agent does: Drain on
// every wake-up, then a Plan.
type driver struct {
	src *Source
	c   *policy.Compiler

	mu      sync.Mutex
	plan    *policy.Plan
	report  Report
	errs    []*PolicyError
	changed chan struct{}
}

func startDriver(t *testing.T, cl *k8stest.Cluster, node string) *driver {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", node)
	}
	src, err := NewForConfig(cl.Config(), Config{NodeName: node}, log)
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{src: src, c: policy.NewCompiler(policy.Options{}, policy.NewMemoryAllocator()), changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = src.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-src.Changed():
			}
			if !src.Synced() {
				// The agent waits for the first full view; keep the wake-up.
				go func() { time.Sleep(20 * time.Millisecond); src.wake() }()
				continue
			}
			r := src.Drain(d.c)
			p := d.c.Plan()
			d.mu.Lock()
			d.plan, d.report, d.errs = p, r, src.PolicyErrors()
			close(d.changed)
			d.changed = make(chan struct{})
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return d
}

// waitPlan waits until cond holds for the latest plan and policy errors.
func (d *driver) waitPlan(t *testing.T, what string, cond func(p *policy.Plan, errs []*PolicyError) bool) *policy.Plan {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		p, errs, ch := d.plan, d.errs, d.changed
		d.mu.Unlock()
		if p != nil && cond(p, errs) {
			return p
		}
		select {
		case <-ch:
		case <-deadline.C:
			js, _ := json.MarshalIndent(p, "", " ")
			t.Fatalf("timed out waiting for %s; errors %v; plan:\n%s", what, errs, js)
		}
	}
}

func mustCreateNode(t *testing.T, cs kubernetes.Interface, name, ip string) {
	t.Helper()
	ctx := t.Context()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mustCreatePod creates a pod bound to node and gives it ip through the
// status subresource (there is no kubelet).
func mustCreatePod(t *testing.T, cs kubernetes.Interface, ns, name, node, ip string, labels map[string]string) {
	t.Helper()
	ctx := t.Context()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func mustCreateNamespace(t *testing.T, cs kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager makes the default service account pods need.
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func applyYAML(t *testing.T, cl *k8stest.Cluster, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cl.MustKubectl(t, "apply", "-f", path)
}

func ipcache(p *policy.Plan) map[string]policy.ID {
	out := map[string]policy.ID{}
	for _, e := range p.IPCache {
		out[e.Prefix.String()] = e.Identity
	}
	return out
}

func endpointOf(p *policy.Plan, ns, name string) *policy.EndpointPlan {
	for i := range p.Endpoints {
		if p.Endpoints[i].Namespace == ns && p.Endpoints[i].Name == name {
			return &p.Endpoints[i]
		}
	}
	return nil
}

// ingressFrom returns the ports an endpoint's ingress allows from id.
func ingressFrom(ep *policy.EndpointPlan, id policy.ID) []uint16 {
	var out []uint16
	if ep == nil {
		return nil
	}
	for _, e := range ep.Ingress.Entries {
		if e.Identity == id && e.Verdict == policy.VerdictAllow {
			out = append(out, e.Ports.From)
		}
	}
	return out
}

const webPolicy = `apiVersion: moat.io/v1alpha1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "%d", protocol: TCP}]}]
`

// TestSourceAgainstAPIServer: pods, namespaces, nodes, the apiserver's
// EndpointSlices and policies of every kind, read from a real apiserver,
// become the Plan of the node they are on (and peers of the other).
func TestSourceAgainstAPIServer(t *testing.T) {
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "testdata/crds")
	cs := cl.Client(t)
	mustCreateNode(t, cs, "node-1", "192.168.50.1")
	mustCreateNode(t, cs, "node-2", "192.168.50.2")
	mustCreateNamespace(t, cs, "shop", map[string]string{"team": "a"})

	// The harness runs the apiserver with --endpoint-reconciler-type=none:
	// write the slice its reconciler would.
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(t.Context(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "kubernetes", Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"192.168.50.9"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n1 := startDriver(t, cl, "node-1")
	n2 := startDriver(t, cl, "node-2")

	// web on node-1, client on node-2; both differ from a second client
	// only in pod-template-hash, which is no part of the identity.
	mustCreatePod(t, cs, "shop", "web", "node-1", "10.1.1.10", map[string]string{"app": "web"})
	mustCreatePod(t, cs, "shop", "client-a", "node-2", "10.1.2.10", map[string]string{"app": "client", "pod-template-hash": "aaa"})
	mustCreatePod(t, cs, "shop", "client-b", "node-2", "10.1.2.11", map[string]string{"app": "client", "pod-template-hash": "bbb"})

	start := time.Now()
	applyYAML(t, cl, "web", fmt.Sprintf(webPolicy, 80))
	var clientID policy.ID
	p1 := n1.waitPlan(t, "node-1: web allows the clients on 80", func(p *policy.Plan, _ []*PolicyError) bool {
		ipc := ipcache(p)
		clientID = ipc["10.1.2.10/32"]
		return clientID != 0 && slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{80})
	})
	t.Logf("kubectl apply → node-1 plan: %s", time.Since(start).Round(time.Millisecond))
	ipc := ipcache(p1)
	if ipc["10.1.2.11/32"] != clientID {
		t.Errorf("client-b identity %d, client-a %d: pod-template-hash must not split identities", ipc["10.1.2.11/32"], clientID)
	}
	if len(p1.Endpoints) != 1 {
		t.Errorf("node-1 plan endpoints = %d, want only web", len(p1.Endpoints))
	}
	if ipc["192.168.50.1/32"] != policy.IDHost || ipc["192.168.50.2/32"] != policy.IDRemoteNode {
		t.Errorf("node-1 ipcache: own node %v (want host), node-2 %v (want remote-node)", ipc["192.168.50.1/32"], ipc["192.168.50.2/32"])
	}
	if ipc["192.168.50.9/32"] != policy.IDKubeAPIServer {
		t.Errorf("node-1 ipcache has no kube-apiserver entry for 192.168.50.9 (EndpointSlices of default/kubernetes): %v", ipc)
	}
	p2 := n2.waitPlan(t, "node-2: the clients are local, web a peer", func(p *policy.Plan, _ []*PolicyError) bool {
		return endpointOf(p, "shop", "client-a") != nil && endpointOf(p, "shop", "client-b") != nil && ipcache(p)["10.1.1.10/32"] >= policy.IDFirstAllocated
	})
	if endpointOf(p2, "shop", "web") != nil {
		t.Errorf("node-2 has web (a node-1 pod) in its plan")
	}
	if ipcache(p2)["192.168.50.2/32"] != policy.IDHost || ipcache(p2)["192.168.50.1/32"] != policy.IDRemoteNode {
		t.Errorf("node-2 ipcache: own node %v, node-1 %v", ipcache(p2)["192.168.50.2/32"], ipcache(p2)["192.168.50.1/32"])
	}

	// Update: the port changes on both... node-1 sees it.
	applyYAML(t, cl, "web", fmt.Sprintf(webPolicy, 8080))
	n1.waitPlan(t, "node-1: web allows the clients on 8080", func(p *policy.Plan, _ []*PolicyError) bool {
		return slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{8080})
	})

	// A bad update: reported with the field path, the previous version
	// stays in force.
	bad := strings.Replace(fmt.Sprintf(webPolicy, 8080), `port: "8080"`, `port: "99999"`, 1)
	applyYAML(t, cl, "web", bad)
	n1.waitPlan(t, "node-1: the bad update reported", func(p *policy.Plan, errs []*PolicyError) bool {
		return len(errs) == 1 && strings.Contains(errs[0].Error(), "NetworkPolicy.moat.io shop/web: spec.ingress[0].toPorts[0].ports[0].port") &&
			errs[0].Previous && slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{8080})
	})

	// Cilium's kinds appear with their CRDs, after the agent started.
	cl.ApplyCRDs(t, "testdata/cilium-crds")
	applyYAML(t, cl, "cnp", `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-9090, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
`)
	n1.waitPlan(t, "node-1: the CNP adds 9090", func(p *policy.Plan, _ []*PolicyError) bool {
		return slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{8080, 9090})
	})
	// Kubernetes NetworkPolicy: namespaceSelector over namespace labels.
	applyYAML(t, cl, "knp", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-7070, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: 7070, protocol: TCP}]
`)
	n1.waitPlan(t, "node-1: the Kubernetes NetworkPolicy adds 7070", func(p *policy.Plan, _ []*PolicyError) bool {
		return slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{7070, 8080, 9090})
	})

	// Deletes: the moat policy goes (its error with it), then the pod.
	cl.MustKubectl(t, "delete", "networkpolicies.moat.io", "-n", "shop", "web")
	n1.waitPlan(t, "node-1: the moat policy gone", func(p *policy.Plan, errs []*PolicyError) bool {
		return len(errs) == 0 && slicesEqual(ingressFrom(endpointOf(p, "shop", "web"), clientID), []uint16{7070, 9090})
	})
	if err := cs.CoreV1().Pods("shop").Delete(t.Context(), "client-a", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	n1.waitPlan(t, "node-1: client-a's address gone", func(p *policy.Plan, _ []*PolicyError) bool {
		_, ok := ipcache(p)["10.1.2.10/32"]
		return !ok
	})
	n2.waitPlan(t, "node-2: client-a gone", func(p *policy.Plan, _ []*PolicyError) bool {
		return endpointOf(p, "shop", "client-a") == nil && endpointOf(p, "shop", "client-b") != nil
	})

	// Figures: apply → node-1's plan for policies created through the API
	// (no kubectl process in the measurement), one at a time.
	dyn, err := dynamic.NewForConfig(cl.Config())
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "moat.io", Version: "v1alpha1", Resource: "networkpolicies"}
	var lat []time.Duration
	for i := range 20 {
		port := 20000 + i
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "moat.io/v1alpha1", "kind": "NetworkPolicy",
			"metadata": map[string]any{"name": fmt.Sprintf("p%d", i), "namespace": "shop"},
			"spec": map[string]any{
				"endpointSelector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
				"ingress": []any{map[string]any{
					"fromEndpoints": []any{map[string]any{"matchLabels": map[string]any{"app": "client"}}},
					"toPorts":       []any{map[string]any{"ports": []any{map[string]any{"port": fmt.Sprint(port), "protocol": "TCP"}}}},
				}},
			},
		}}
		start := time.Now()
		if _, err := dyn.Resource(gvr).Namespace("shop").Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		n1.waitPlan(t, fmt.Sprintf("port %d in the plan", port), func(p *policy.Plan, _ []*PolicyError) bool {
			for _, e := range endpointOf(p, "shop", "web").Ingress.Entries {
				if e.Ports.From == uint16(port) {
					return true
				}
			}
			return false
		})
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("create → plan over %d policies: p50 %s, max %s (includes the create round trip)", len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
}

func slicesEqual(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
