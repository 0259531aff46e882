package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/k8s/identity"
	"github.com/moatnet/moat/policy"
)

// The cluster and the files describe the same state: three Star Wars pods
// in default, two shop pods, and three policies of three kinds, one per
// file (so that each file maps to one object).
var kubePolicies = map[string]string{
	"deathstar.yaml": `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: deathstar-landing
  namespace: default
spec:
  endpointSelector:
    matchLabels: {org: empire, class: deathstar}
  ingress:
  - fromEndpoints:
    - matchLabels: {org: empire}
    toPorts:
    - ports:
      - {port: "80", protocol: TCP}
      rules:
        http:
        - {method: POST, path: "/v1/request-landing"}
`,
	"shop-api.yaml": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-from-prod
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: api}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {env: prod}
    ports:
    - {port: 8080, protocol: TCP}
`,
	"shop-web.yaml": `apiVersion: moat.io/v1alpha1
kind: NetworkPolicy
metadata:
  name: web-egress
  namespace: shop
spec:
  endpointSelector:
    matchLabels: {app: web}
  egress:
  - toEndpoints:
    - matchLabels: {app: api}
    toPorts:
    - ports:
      - {port: "8080", protocol: TCP}
`,
}

// objectOf is the object each file becomes in the cluster, as trace names
// its source.
var objectOf = map[string]string{
	"deathstar.yaml": "CiliumNetworkPolicy.cilium.io default/deathstar-landing",
	"shop-api.yaml":  "NetworkPolicy.networking.k8s.io shop/api-from-prod",
	"shop-web.yaml":  "NetworkPolicy.moat.io shop/web-egress",
}

type kubePod struct {
	ns, name, ip string
	labels       map[string]string
}

var kubePods = []kubePod{
	{"default", "deathstar", "10.200.0.10", map[string]string{"org": "empire", "class": "deathstar"}},
	{"default", "tiefighter", "10.200.0.20", map[string]string{"org": "empire", "class": "tiefighter"}},
	{"default", "xwing", "10.200.0.30", map[string]string{"org": "alliance", "class": "xwing"}},
	{"shop", "api", "10.200.1.10", map[string]string{"app": "api", "pod-template-hash": "abc"}},
	{"shop", "web", "10.200.1.20", map[string]string{"app": "web"}},
}

// standaloneEndpoints is the endpoints file of the same state: namespace
// labels as the apiserver sets them, pod-template-hash left out as the
// agent's label filter does.
const standaloneEndpoints = `apiVersion: moat.io/v1alpha1
kind: Endpoints
node: {name: node-1}
namespaces:
- name: default
  labels: {kubernetes.io/metadata.name: default}
- name: shop
  labels: {kubernetes.io/metadata.name: shop, env: prod}
endpoints:
- {namespace: default, name: deathstar, labels: {org: empire, class: deathstar}, ipv4: 10.200.0.10}
- {namespace: default, name: tiefighter, labels: {org: empire, class: tiefighter}, ipv4: 10.200.0.20}
- {namespace: default, name: xwing, labels: {org: alliance, class: xwing}, ipv4: 10.200.0.30}
- {namespace: shop, name: api, labels: {app: api}, ipv4: 10.200.1.10}
- {namespace: shop, name: web, labels: {app: web}, ipv4: 10.200.1.20}
`

// startKubeState starts an apiserver holding the state above (pods on
// node-1, created as API objects with a pod IP: no kubelet) and returns it
// with the directory of the equivalent files.
func startKubeState(t *testing.T) (*k8stest.Cluster, string) {
	t.Helper()
	cl := k8stest.Start(t)
	// moat's CRDs without Identity (added where a test wants identities),
	// and cilium.io's.
	cl.ApplyCRDs(t, filepath.Join(root, "charts", "moat", "crds", "moat.io_networkpolicies.yaml"),
		filepath.Join(root, "charts", "moat", "crds", "moat.io_clusterwidenetworkpolicies.yaml"),
		filepath.Join(root, "charts", "moat", "extra-crds", "cilium"))
	cs := cl.Client(t)
	ctx := t.Context()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"env": "prod"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range kubePods {
		createPod(t, cs, p.ns, p.name, "node-1", p.ip, p.labels)
	}
	dir := t.TempDir()
	pdir := filepath.Join(dir, "policies")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, body := range kubePolicies {
		if err := os.WriteFile(filepath.Join(pdir, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cl.MustKubectl(t, "apply", "-f", filepath.Join(pdir, f))
	}
	if err := os.WriteFile(filepath.Join(dir, "endpoints.yaml"), []byte(standaloneEndpoints), 0o644); err != nil {
		t.Fatal(err)
	}
	return cl, dir
}

// createPod creates a pod bound to node with a pod IP, as the scheduler
// and the kubelet would leave it.
func createPod(t testing.TB, cs kubernetes.Interface, ns, name, node, ip string, labels map[string]string) {
	t.Helper()
	// No controller-manager: create the namespace's default service
	// account, which the ServiceAccount admission plugin wants.
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(t.Context(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

var kubeTraces = []struct {
	name    string
	args    []string
	allowed bool
}{
	{"landing allowed", []string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "POST", "--http-path", "/v1/request-landing"}, true},
	{"exhaust port 403", []string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "PUT", "--http-path", "/v1/exhaust-port"}, false},
	{"xwing default deny", []string{"--from", "default/xwing", "--to", "default/deathstar", "--port", "80/TCP"}, false},
	{"web to api by namespace label", []string{"--from", "shop/web", "--to", "shop/api", "--port", "8080/TCP"}, true},
	{"web egress deny on another port", []string{"--from", "shop/web", "--to", "shop/api", "--port", "9090/TCP"}, false},
	{"xwing to api: not from a prod namespace", []string{"--from", "default/xwing", "--to", "shop/api", "--port", "8080/TCP"}, false},
	{"to an address", []string{"--from", "shop/web", "--to", "10.200.1.10", "--port", "8080/TCP"}, true},
}

// TestPolicyTraceKubeconfigMatchesStandalone: trace against the live
// cluster prints the same text as trace over the equivalent files, except
// that each policy's source names the object instead of the file.
func TestPolicyTraceKubeconfigMatchesStandalone(t *testing.T) {
	cl, dir := startKubeState(t)
	for _, tc := range kubeTraces {
		t.Run(tc.name, func(t *testing.T) {
			want, stderr, code := runCLI(t, append([]string{"policy", "trace", "--policies", filepath.Join(dir, "policies"), "--endpoints", filepath.Join(dir, "endpoints.yaml")}, tc.args...)...)
			if (code == 0) != tc.allowed || (code != 0 && code != 2) {
				t.Fatalf("standalone: exit %d, want allowed=%v: %s%s", code, tc.allowed, want, stderr)
			}
			for f, obj := range objectOf {
				want = strings.ReplaceAll(want, filepath.Join(dir, "policies", f)+" doc 1", obj)
			}
			got, stderr, code := runCLI(t, append([]string{"policy", "trace", "--kubeconfig", cl.Kubeconfig}, tc.args...)...)
			if (code == 0) != tc.allowed || (code != 0 && code != 2) {
				t.Fatalf("kubeconfig: exit %d, want allowed=%v: %s%s", code, tc.allowed, got, stderr)
			}
			if got != want {
				t.Fatalf("kubeconfig trace differs from the standalone one\n--- kubeconfig\n%s--- standalone (sources renamed)\n%s", got, want)
			}
			if stderr != "" {
				t.Errorf("unexpected warnings: %s", stderr)
			}
		})
	}
	// A pod that does not exist is named.
	_, stderr, code := runCLI(t, "policy", "trace", "--kubeconfig", cl.Kubeconfig, "--from", "default/ghost", "--to", "default/deathstar", "--port", "80/TCP")
	if code != 1 || !strings.Contains(stderr, "pod default/ghost: not found") {
		t.Fatalf("missing pod: exit %d: %s", code, stderr)
	}
	// File flags and --kubeconfig do not mix.
	_, stderr, code = runCLI(t, "policy", "trace", "--kubeconfig", cl.Kubeconfig, "--policies", dir, "--from", "default/xwing", "--to", "default/deathstar", "--port", "80/TCP")
	if code != 1 || !strings.Contains(stderr, "give no --policies") {
		t.Fatalf("mixed flags: exit %d: %s", code, stderr)
	}
}

// TestPolicyTraceKubeconfigIdentities: with Identity objects in the
// cluster, trace shows the cluster's numbers, and warns about a label set
// that has none yet.
func TestPolicyTraceKubeconfigIdentities(t *testing.T) {
	cl, _ := startKubeState(t)
	cl.ApplyCRDs(t, filepath.Join(root, "charts", "moat", "crds", "moat.io_identities.yaml"))
	dyn, err := dynamic.NewForConfig(cl.Config())
	if err != nil {
		t.Fatal(err)
	}
	cs := cl.Client(t)
	nsLabels := func(ns string) map[string]string {
		n, err := cs.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n.Labels
	}
	// The tiefighter and the deathstar have identities; the xwing none.
	for name, id := range map[string]policy.ID{"tiefighter": 4100, "deathstar": 4200} {
		var lbl map[string]string
		for _, p := range kubePods {
			if p.ns == "default" && p.name == name {
				lbl = p.labels
			}
		}
		ls := identity.PodLabels("default", lbl, nsLabels("default"), identity.LabelFilter{})
		u := identity.NewUnstructured(ls, id)
		if _, err := dyn.Resource(identity.Resource).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, code := runCLI(t, "policy", "trace", "--kubeconfig", cl.Kubeconfig, "--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "POST", "--http-path", "/v1/request-landing")
	if code != 0 || !strings.HasPrefix(out, "default/tiefighter (identity 4100) -> default/deathstar (identity 4200) 80/TCP\n") {
		t.Fatalf("exit %d:\n%s%s", code, out, stderr)
	}
	// Every other label set is numbered for this run and named on stderr.
	if !strings.Contains(stderr, "warning: no Identity object for") || !strings.Contains(stderr, "class=xwing") {
		t.Fatalf("no warning about the xwing's label set:\n%s", stderr)
	}
	out, _, code = runCLI(t, "policy", "trace", "--kubeconfig", cl.Kubeconfig, "--from", "default/xwing", "--to", "default/deathstar", "--port", "80/TCP")
	if code != 2 || !strings.Contains(out, "(identity 4200) 80/TCP") || strings.Contains(out, "default/xwing (identity 4100)") || strings.Contains(out, "default/xwing (identity 4200)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// TestPolicyValidateKubeconfig: validate --kubeconfig names every bad live
// object by kind, namespace and name with the field path, and passes a
// clean cluster.
func TestPolicyValidateKubeconfig(t *testing.T) {
	cl, _ := startKubeState(t)
	out, stderr, code := runCLI(t, "policy", "validate", "--kubeconfig", cl.Kubeconfig)
	if code != 0 || !strings.HasPrefix(out, "3 policies valid (") {
		t.Fatalf("clean cluster: exit %d: %s%s", code, out, stderr)
	}
	// Regexes the CRD schemas cannot check, in a moat policy and a CNP:
	// stored by the apiserver, rejected by moat.
	bad := []string{`apiVersion: moat.io/v1alpha1
kind: NetworkPolicy
metadata: {name: bad-regex, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{path: "/v1/("}]
`, `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: bad-method, namespace: default}
spec:
  endpointSelector: {}
  egress:
  - toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: "GET|(POST"}]
`}
	for i, b := range bad {
		f := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(f, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Kubectl("apply", "-f", f); err != nil {
			t.Fatalf("bad object %d rejected at apply time (this test needs it stored): %v", i, err)
		}
	}
	out, stderr, code = runCLI(t, "policy", "validate", "--kubeconfig", cl.Kubeconfig)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s%s", code, out, stderr)
	}
	for _, want := range []string{
		"NetworkPolicy.moat.io shop/bad-regex: spec.ingress[0].toPorts[0].rules.http[0].path",
		"CiliumNetworkPolicy.cilium.io default/bad-method: spec.egress[0].toPorts[0].rules.http[0].method",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("validate does not name %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stderr, "error(s) found in 2 policy object(s)") {
		t.Errorf("summary: %s", stderr)
	}
	// The valid objects are not reported.
	if strings.Contains(stderr, "web-egress") || strings.Contains(stderr, "deathstar-landing") {
		t.Errorf("a valid object is reported:\n%s", stderr)
	}
	// trace still works and warns that the bad objects are not in force.
	_, stderr, code = runCLI(t, "policy", "trace", "--kubeconfig", cl.Kubeconfig, "--from", "default/xwing", "--to", "default/deathstar", "--port", "80/TCP")
	if code != 2 || !strings.Contains(stderr, "warning: 2 policy object(s) with errors") {
		t.Fatalf("trace with bad objects: exit %d: %s", code, stderr)
	}
}

// TestPolicyReaderRBAC: trace and validate --kubeconfig work with a token
// bound to exactly the chart's moat-policy-reader ClusterRole, with the
// same output as an admin's, and that role grants no write and no Secret.
func TestPolicyReaderRBAC(t *testing.T) {
	cl, _ := startKubeState(t)
	cl.ApplyCRDs(t, filepath.Join(root, "charts", "moat", "crds", "moat.io_identities.yaml"))
	sa := cl.ServiceAccountConfig(t, "moat-system", "alice") // creates the namespace
	cl.ApplyTemplate(t, filepath.Join(root, "charts", "moat", "templates", "rbac-agent.yaml"), "moat-system")
	cl.MustKubectl(t, "create", "clusterrolebinding", "alice-reads-policy", "--clusterrole=moat-policy-reader", "--serviceaccount=moat-system:alice")
	kc := cl.WriteKubeconfig(t, "alice", sa)

	args := []string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "POST", "--http-path", "/v1/request-landing"}
	want, _, code := runCLI(t, append([]string{"policy", "trace", "--kubeconfig", cl.Kubeconfig}, args...)...)
	if code != 0 {
		t.Fatalf("admin trace: exit %d: %s", code, want)
	}
	got, stderr, code := runCLI(t, append([]string{"policy", "trace", "--kubeconfig", kc}, args...)...)
	if code != 0 || got != want {
		t.Fatalf("trace as moat-policy-reader: exit %d\n%s%s\nwant\n%s", code, got, stderr, want)
	}
	out, stderr, code := runCLI(t, "policy", "validate", "--kubeconfig", kc)
	if code != 0 || !strings.HasPrefix(out, "3 policies valid") {
		t.Fatalf("validate as moat-policy-reader: exit %d: %s%s", code, out, stderr)
	}

	cs, err := kubernetes.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	// Positive control, then what the role must not grant.
	if _, err := cs.CoreV1().Pods("default").List(t.Context(), metav1.ListOptions{}); err != nil {
		t.Fatalf("control: list pods as the reader: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("default").List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list secrets as the reader: %v, want forbidden", err)
	}
	if err := cs.CoreV1().Pods("default").Delete(t.Context(), "xwing", metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("delete a pod as the reader: %v, want forbidden", err)
	}
	if _, err := cs.CoreV1().Pods("default").Watch(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("watch pods as the reader: %v, want forbidden (the CLI lists once)", err)
	}
}
