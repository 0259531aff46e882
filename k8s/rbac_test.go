package k8s

// rbac_test.go proves the chart's agent role (charts/moat/templates/
// rbac-agent.yaml) sufficient and tight: the Source and the identity
// allocator run with a ServiceAccount token bound to exactly that role.

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/k8s/identity"
	"github.com/moatnet/moat/policy"
)

const rbacNS = "moat-system"

// applyAgentRBAC applies the chart's agent RBAC (its only templating is the
// release namespace) in namespace ns.
func applyAgentRBAC(t *testing.T, cl *k8stest.Cluster, ns string) {
	t.Helper()
	if _, err := cl.Client(t).CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	cl.ApplyTemplate(t, filepath.Join("..", "charts", "moat", "templates", "rbac-agent.yaml"), ns)
}

func rbacDefaultSA(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// TestAgentRBAC: with a token bound to exactly the chart's agent role, the
// Source syncs every informer (all five policy kinds, the ConfigMap by
// name), compiles a Plan with a policy of each kind, follows a change, and
// the identity allocator allocates; the role grants no Secret, no write on
// pods or policies, and no other ConfigMap.
func TestAgentRBAC(t *testing.T) {
	cl := k8stest.Start(t)
	cl.ApplyCRDs(t, "../charts/moat/crds", "../charts/moat/extra-crds/cilium")
	applyAgentRBAC(t, cl, rbacNS)
	sa := cl.ServiceAccountConfig(t, rbacNS, "moat-agent")

	// Negative checks, each next to a positive control on the same resource.
	for _, c := range []struct {
		attr authzv1.ResourceAttributes
		want bool
	}{
		{authzv1.ResourceAttributes{Resource: "pods", Verb: "watch"}, true},
		{authzv1.ResourceAttributes{Resource: "pods", Verb: "create", Namespace: "default"}, false},
		{authzv1.ResourceAttributes{Resource: "pods", Verb: "update", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Resource: "pods", Verb: "patch", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Resource: "pods", Verb: "delete", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Resource: "pods", Subresource: "status", Verb: "update", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Resource: "secrets", Verb: "list"}, false},
		{authzv1.ResourceAttributes{Resource: "secrets", Verb: "get", Namespace: rbacNS, Name: "x"}, false},
		{authzv1.ResourceAttributes{Resource: "nodes", Verb: "list"}, true},
		{authzv1.ResourceAttributes{Resource: "nodes", Verb: "update", Name: "node-1"}, false},
		{authzv1.ResourceAttributes{Group: "moat.io", Resource: "networkpolicies", Verb: "list"}, true},
		{authzv1.ResourceAttributes{Group: "moat.io", Resource: "networkpolicies", Verb: "create", Namespace: "default"}, false},
		{authzv1.ResourceAttributes{Group: "moat.io", Resource: "networkpolicies", Subresource: "status", Verb: "update", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Group: "cilium.io", Resource: "ciliumnetworkpolicies", Verb: "delete", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Group: "networking.k8s.io", Resource: "networkpolicies", Verb: "update", Namespace: "default", Name: "x"}, false},
		{authzv1.ResourceAttributes{Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Verb: "create"}, false},
		{authzv1.ResourceAttributes{Resource: "configmaps", Verb: "get", Namespace: rbacNS, Name: "moat-config"}, true},
		{authzv1.ResourceAttributes{Resource: "configmaps", Verb: "get", Namespace: rbacNS, Name: "other"}, false},
		{authzv1.ResourceAttributes{Resource: "configmaps", Verb: "list", Namespace: rbacNS}, false},
		{authzv1.ResourceAttributes{Resource: "configmaps", Verb: "update", Namespace: rbacNS, Name: "moat-config"}, false},
		{authzv1.ResourceAttributes{Resource: "configmaps", Verb: "get", Namespace: "default", Name: "moat-config"}, false},
		{authzv1.ResourceAttributes{Resource: "serviceaccounts", Subresource: "token", Verb: "create", Namespace: rbacNS, Name: "moat-agent"}, false},
	} {
		if got := k8stest.Allowed(t, sa, c.attr); got != c.want {
			t.Errorf("agent may %s %s/%s %s/%s: %v, want %v", c.attr.Verb, c.attr.Resource, c.attr.Subresource, c.attr.Namespace, c.attr.Name, got, c.want)
		}
	}

	// The cluster: a node, local and remote pods, one policy of each kind
	// (moat's and cilium's CRDs installed), the agent ConfigMap and another.
	ctx := t.Context()
	admin := cl.Client(t)
	for _, ns := range []string{"shop"} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"env": "prod"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rbacDefaultSA(t, admin, ns)
	}
	if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.50.1"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustCreatePod(t, admin, "shop", "web", "node-1", "10.1.0.10", map[string]string{"app": "web"})
	mustCreatePod(t, admin, "shop", "api", "node-2", "10.1.1.10", map[string]string{"app": "api"})
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: "moat-config", Namespace: rbacNS}, Data: map[string]string{"logLevel": "debug"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: rbacNS}, Data: map[string]string{"secretish": "x"}},
	} {
		if _, err := admin.CoreV1().ConfigMaps(rbacNS).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rbacApplyYAML(t, cl, `apiVersion: moat.io/v1alpha1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "7070", protocol: TCP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-k8s, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {env: prod}}}]
    ports: [{port: 6060, protocol: TCP}]
`)

	// The Source with the agent's token, compiling with the cluster-wide
	// allocator, also with the agent's token.
	sa.UserAgent = "moat-agent/node-1"
	dyn, err := dynamic.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	alloc, err := identity.New(identity.Config{Dynamic: dyn, Kube: kc, Namespace: rbacNS, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(kc, dyn, Config{NodeName: "node-1", ConfigMapNamespace: rbacNS, ConfigMapName: "moat-config"}, log)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = alloc.Run(rctx); done <- struct{}{} }()
	go func() { _ = src.Run(rctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })

	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if err := alloc.WaitForSync(wctx); err != nil {
		t.Fatalf("identity allocator with the agent's role: %v", err)
	}
	// The policy kinds' informers start when the Source sees their CRDs:
	// wait until all five are synced.
	for {
		src.mu.Lock()
		n := len(src.policies)
		src.mu.Unlock()
		if n == len(policyKinds) && src.Synced() {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("the Source did not sync with the agent's role (%d of %d policy kinds, stale since %v)", n, len(policyKinds), src.StaleSince())
		case <-time.After(50 * time.Millisecond):
		}
	}
	c := policy.NewCompiler(policy.Options{}, alloc)
	waitFor := func(what string, cond func(p *policy.Plan) bool) {
		t.Helper()
		for {
			r := src.Drain(c)
			for _, err := range r.Errors {
				t.Errorf("drain: %v", err)
			}
			if p := c.Plan(); cond(p) {
				return
			}
			select {
			case <-wctx.Done():
				t.Fatalf("%s: not reached (policy errors %v, stale since %v)", what, src.PolicyErrors(), src.StaleSince())
			case <-src.Changed():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	hasPort := func(p *policy.Plan, d policy.Direction, port uint16) bool {
		ep := p.Endpoint("shop", "web")
		if ep == nil {
			return false
		}
		for _, e := range ep.Direction(d).Entries {
			if e.Ports.From == port {
				return true
			}
		}
		return false
	}
	waitFor("a policy of each kind in the Plan", func(p *policy.Plan) bool {
		return hasPort(p, policy.Egress, 8080) && hasPort(p, policy.Ingress, 7070) && hasPort(p, policy.Ingress, 6060)
	})
	if data, ok := src.ConfigMap(); !ok || data["logLevel"] != "debug" {
		t.Errorf("agent ConfigMap through the role: %v, %v", data, ok)
	}
	if !src.StaleSince().IsZero() {
		t.Errorf("a watch failed with the agent's role (stale since %v)", src.StaleSince())
	}
	// The identities came from the cluster-wide allocator, as Identity
	// objects created with the agent's token.
	ids, err := dynamic.NewForConfigOrDie(cl.Config()).Resource(identity.Resource).List(ctx, metav1.ListOptions{})
	if err != nil || len(ids.Items) < 2 {
		t.Fatalf("identities created with the agent's role: %v, %v", ids, err)
	}
	// A change follows through the watch.
	cl.MustKubectl(t, "delete", "ciliumnetworkpolicies.cilium.io", "-n", "shop", "web-in")
	waitFor("a deleted policy leaves the Plan", func(p *policy.Plan) bool {
		return !hasPort(p, policy.Ingress, 7070) && hasPort(p, policy.Ingress, 6060)
	})
}

// rbacApplyYAML applies a manifest with kubectl.
func rbacApplyYAML(t *testing.T, cl *k8stest.Cluster, doc string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cl.MustKubectl(t, "apply", "-f", f)
}
