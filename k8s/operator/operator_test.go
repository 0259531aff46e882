package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/internal/metricslint"
	"github.com/moatnet/moat/k8s/identity"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policyload"
)

const opNS = "moat-system"

// env is a control plane with moat's CRDs, the chart's RBAC applied, and
// service-account configs bound to exactly the operator's and the agent's
// roles.
type env struct {
	c        *k8stest.Cluster
	admin    kubernetes.Interface
	dyn      dynamic.Interface
	operator *rest.Config
	agent    *rest.Config
}

func startEnv(t *testing.T) *env {
	t.Helper()
	c := k8stest.Start(t)
	c.ApplyCRDs(t, "../../charts/moat/crds")
	c.MustKubectl(t, "create", "namespace", opNS)
	applyChartRBAC(t, c, "rbac-operator.yaml")
	applyChartRBAC(t, c, "rbac-agent.yaml")
	return &env{
		c: c, admin: c.Client(t), dyn: dynamic.NewForConfigOrDie(c.Config()),
		operator: c.ServiceAccountConfig(t, opNS, "moat-operator"),
		agent:    c.ServiceAccountConfig(t, opNS, "moat-agent"),
	}
}

func applyChartRBAC(t *testing.T, c *k8stest.Cluster, file string) {
	t.Helper()
	c.ApplyTemplate(t, filepath.Join("..", "..", "charts", "moat", "templates", file), opNS)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

type running struct {
	*Operator
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// stop cancels the replica and waits for Run to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("operator Run: %v", err)
		}
		r.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("operator did not stop within 30s")
	}
}

// startOperator runs a replica with the operator's service account.
func startOperator(t *testing.T, e *env, name string, mod func(*Config)) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		REST: e.operator, Namespace: opNS, Identity: name,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 250 * time.Millisecond,
		IdentityGCGrace: 2 * time.Second, IdentityGCInterval: 200 * time.Millisecond,
		Registry: reg, MetricsAddress: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	op, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Operator: op, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- op.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startAllocator(t *testing.T, cfg *rest.Config, node string) *identity.Allocator {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "moat-agent/" + node
	a, err := identity.New(identity.Config{
		Dynamic: dynamic.NewForConfigOrDie(cfg), Kube: kubernetes.NewForConfigOrDie(cfg), Namespace: opNS,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("node", node),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sctx, scancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer scancel()
	if err := a.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func createNamespace(t *testing.T, e *env, name string, labels map[string]string) {
	t.Helper()
	if _, err := e.admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager runs: the ServiceAccount admission plugin needs
	// the default service account to exist.
	if _, err := e.admin.CoreV1().ServiceAccounts(name).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func createPod(t *testing.T, e *env, ns, name string, labels map[string]string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
	}
	if _, err := e.admin.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func getIdentity(t *testing.T, e *env, name string) *identity.Object {
	t.Helper()
	u, err := e.dyn.Resource(identity.Resource).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	o, err := identity.FromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// TestIdentityGC: of two identities no agent references any more, the one
// a pod's label set maps to stays, the other is deleted after the grace
// period (not before); one referenced by an agent but by no pod survives
// because the agent removes the operator's mark each time.
func TestIdentityGC(t *testing.T) {
	e := startEnv(t)
	createNamespace(t, e, "prod", map[string]string{"team": "a"})
	// The namespace's labels as the apiserver stores them (it adds
	// kubernetes.io/metadata.name), as the agents and the operator see them.
	ns, err := e.admin.CoreV1().Namespaces().Get(t.Context(), "prod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsLabels := ns.Labels
	if nsLabels["team"] != "a" || nsLabels["kubernetes.io/metadata.name"] != "prod" {
		t.Fatalf("namespace labels %v", nsLabels)
	}
	podLabels := map[string]string{"app": "web", "pod-template-hash": "abc123"}
	createPod(t, e, "prod", "web-1", podLabels)

	alloc := startAllocator(t, e.agent, "node-a")
	used := identity.PodLabels("prod", map[string]string{"app": "web", "pod-template-hash": "other"}, nsLabels, identity.LabelFilter{})
	unused := identity.PodLabels("prod", map[string]string{"app": "gone"}, nsLabels, identity.LabelFilter{})
	held := identity.PodLabels("prod", map[string]string{"app": "held"}, nsLabels, identity.LabelFilter{})
	created := time.Now() // before any of them exists
	var ids []policy.ID
	for _, ls := range []policy.Labels{used, unused, held} {
		id, err := alloc.Allocate(ls)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids[:2] {
		if err := alloc.Release(id); err != nil {
			t.Fatal(err)
		}
	}

	op := startOperator(t, e, "op-1", nil)
	eventually(t, 60*time.Second, "unused identity deleted", func() bool {
		return getIdentity(t, e, identity.ObjectName(unused)) == nil
	})
	// Fresh for a grace period, then marked, then unused for a grace
	// period: never before two graces (less the up to 1s the apiserver's
	// creationTimestamp, in whole seconds, may be early).
	if el := time.Since(created); el < 2*2*time.Second-time.Second {
		t.Errorf("unused identity deleted %s after creation, before twice the grace (4s) less 1s", el)
	}
	if got := testutil.ToFloat64(op.metrics.gcDeleted); got != 1 {
		t.Errorf("moat_operator_identities_gc_total = %v, want 1", got)
	}
	// Let a few more grace periods pass: the used and held ones stay.
	time.Sleep(3 * 2 * time.Second)
	for _, ls := range []policy.Labels{used, held} {
		o := getIdentity(t, e, identity.ObjectName(ls))
		if o == nil {
			t.Fatalf("identity %s (%s) was collected", identity.ObjectName(ls), ls)
		}
	}
	if o := getIdentity(t, e, identity.ObjectName(used)); o.UnusedSince != "" {
		t.Errorf("identity used by a pod is marked unused since %s", o.UnusedSince)
	}
	if alloc.Stats().UnmarkedUnused == 0 {
		t.Error("the agent never had to remove a mark from the identity it holds (control: the operator should have marked it)")
	}
	if alloc.Stats().Recreated != 0 {
		t.Errorf("the held identity was deleted and re-created %d times", alloc.Stats().Recreated)
	}
	if got := testutil.ToFloat64(op.metrics.gcDeleted); got != 1 {
		t.Errorf("moat_operator_identities_gc_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(op.metrics.identities); got != 2 {
		t.Errorf("moat_operator_identities = %v, want 2", got)
	}

	// The pod goes away: its identity is collected too.
	if err := e.admin.CoreV1().Pods("prod").Delete(t.Context(), "web-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "identity of the deleted pod collected", func() bool {
		return getIdentity(t, e, identity.ObjectName(used)) == nil
	})
}

func policyStatus(t *testing.T, e *env, gvr schema.GroupVersionResource, ns, name string) (gen int64, observed int64, cond *metav1.Condition) {
	t.Helper()
	u, err := e.dyn.Resource(gvr).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	observed, _, _ = unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	raw, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range raw {
		m, _ := c.(map[string]any)
		if m["type"] == ConditionValid {
			g, _ := m["observedGeneration"].(int64)
			cond = &metav1.Condition{Type: ConditionValid, Status: metav1.ConditionStatus(fmt.Sprint(m["status"])),
				Reason: fmt.Sprint(m["reason"]), Message: fmt.Sprint(m["message"]), ObservedGeneration: g}
		}
	}
	return u.GetGeneration(), observed, cond
}

// cliMessage is what `moat policy validate` says about file, without the
// "file: doc N: " prefix (the loader is what the CLI calls).
func cliMessage(t *testing.T, file string) string {
	t.Helper()
	_, err := policyload.Load(file)
	var list policy.ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("policyload.Load(%s) = %v, want field errors", file, err)
	}
	var lines []string
	for _, fe := range list {
		if fe.File == "" || fe.Doc == 0 || fe.Field == "" {
			t.Fatalf("CLI error without file, doc or field: %+v", fe)
		}
		lines = append(lines, fe.Field+": "+fe.Reason)
	}
	return strings.Join(lines, "\n")
}

// TestPolicyStatus: a policy with a bad regex gets Valid=False with the same
// field path and message as `moat policy validate`, a valid one Valid=True,
// both with observedGeneration, and an Event each; fixing the policy flips
// the condition.
func TestPolicyStatus(t *testing.T) {
	e := startEnv(t)
	createNamespace(t, e, "prod", nil)
	op := startOperator(t, e, "op-1", nil)
	for _, f := range []string{"testdata/bad-regex.yaml", "testdata/valid.yaml", "testdata/clusterwide-valid.yaml"} {
		e.c.MustKubectl(t, "apply", "-f", f)
	}
	want := cliMessage(t, "testdata/bad-regex.yaml")
	if !strings.Contains(want, `spec.egress[0].toPorts[0].rules.http[1].path: invalid regex "("`) {
		t.Fatalf("control: CLI message %q lacks the field path", want)
	}
	for _, tc := range []struct {
		gvr     schema.GroupVersionResource
		ns      string
		name    string
		status  metav1.ConditionStatus
		message string
	}{
		{NetworkPolicyResource, "prod", "web-bad", metav1.ConditionFalse, want},
		{NetworkPolicyResource, "prod", "web-ok", metav1.ConditionTrue, MessageValid},
		{ClusterwideNetworkPolicyResource, "", "all-dns", metav1.ConditionTrue, MessageValid},
	} {
		var cond *metav1.Condition
		var gen, observed int64
		eventually(t, 30*time.Second, tc.name+" status", func() bool {
			gen, observed, cond = policyStatus(t, e, tc.gvr, tc.ns, tc.name)
			return cond != nil
		})
		if cond.Status != tc.status || cond.Message != tc.message || observed != gen || cond.ObservedGeneration != gen {
			t.Errorf("%s: Valid=%s %q (reason %s, observed %d/%d, generation %d), want %s %q",
				tc.name, cond.Status, cond.Message, cond.Reason, observed, cond.ObservedGeneration, gen, tc.status, tc.message)
		}
	}
	eventually(t, 30*time.Second, "Warning event on web-bad", func() bool {
		evs, err := e.admin.EventsV1().Events("prod").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if ev.Regarding.Name == "web-bad" && ev.Regarding.Kind == "NetworkPolicy" && ev.Type == corev1.EventTypeWarning &&
				ev.Reason == ReasonInvalid && ev.Note == want {
				return true
			}
		}
		return false
	})
	if got := testutil.ToFloat64(op.metrics.policies.WithLabelValues("false")); got != 1 {
		t.Errorf("moat_operator_policies{valid=false} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(op.metrics.policies.WithLabelValues("true")); got != 2 {
		t.Errorf("moat_operator_policies{valid=true} = %v, want 2", got)
	}

	// Fix it: Valid flips to True for the new generation.
	fixed := strings.Replace(mustRead(t, "testdata/bad-regex.yaml"), `- path: "("`, `- path: "/fixed"`, 1)
	f := filepath.Join(t.TempDir(), "fixed.yaml")
	if err := os.WriteFile(f, []byte(fixed), 0o600); err != nil {
		t.Fatal(err)
	}
	e.c.MustKubectl(t, "apply", "-f", f)
	eventually(t, 30*time.Second, "web-bad valid after the fix", func() bool {
		gen, observed, cond := policyStatus(t, e, NetworkPolicyResource, "prod", "web-bad")
		return cond != nil && cond.Status == metav1.ConditionTrue && cond.ObservedGeneration == gen && observed == gen && gen >= 2
	})
}

func mustRead(t *testing.T, f string) string {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLeaderElection: of two replicas exactly one leads; cancelling the
// leader hands the lease to the other within a bounded time; with both
// stopped, agents keep allocating identities.
func TestLeaderElection(t *testing.T) {
	e := startEnv(t)
	ops := []*running{startOperator(t, e, "op-1", nil), startOperator(t, e, "op-2", nil)}
	leaders := func() []*running {
		var out []*running
		for _, o := range ops {
			if o.Leading() {
				out = append(out, o)
			}
		}
		return out
	}
	eventually(t, 30*time.Second, "one leader", func() bool { return len(leaders()) == 1 })
	// Stays exactly one over several renewals.
	for range 20 {
		if n := len(leaders()); n != 1 {
			t.Fatalf("%d leaders", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	leader := leaders()[0]
	var follower *running
	for _, o := range ops {
		if o != leader {
			follower = o
		}
	}
	lease, err := e.admin.CoordinationV1().Leases(opNS).Get(t.Context(), "moat-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != leader.cfg.Identity {
		t.Fatalf("lease holder %v, want %s", lease.Spec.HolderIdentity, leader.cfg.Identity)
	}
	if testutil.ToFloat64(leader.metrics.leader) != 1 || testutil.ToFloat64(follower.metrics.leader) != 0 {
		t.Error("moat_operator_leader: want 1 on the leader, 0 on the follower")
	}
	// The gauge is served on the metrics address.
	resp, err := http.Get("http://" + leader.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "moat_operator_leader 1") {
		t.Errorf("/metrics of the leader lacks moat_operator_leader 1:\n%s", body)
	}

	start := time.Now()
	leader.stop(t)
	eventually(t, 20*time.Second, "follower takes over", follower.Leading)
	t.Logf("takeover after the leader stopped: %s", time.Since(start))

	follower.stop(t)
	// No operator: two agents still allocate, with identical numbers.
	a, b := startAllocator(t, e.agent, "node-a"), startAllocator(t, e.agent, "node-b")
	var wg sync.WaitGroup
	got := [2][20]policy.ID{}
	for ai, al := range []*identity.Allocator{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				id, err := al.Allocate(identity.PodLabels("prod", map[string]string{"app": fmt.Sprint(i)}, nil, identity.LabelFilter{}))
				if err != nil {
					t.Errorf("allocate without operator: %v", err)
					return
				}
				got[ai][i] = id
			}
		}()
	}
	wg.Wait()
	if got[0] != got[1] {
		t.Errorf("agents disagree without the operator: %v vs %v", got[0], got[1])
	}
}

// TestOperatorRBAC: the operator's role grants nothing unrelated (the other
// tests prove it sufficient: every replica runs with it).
func TestOperatorRBAC(t *testing.T) {
	e := startEnv(t)
	review := func(attr authzv1.ResourceAttributes) bool { return k8stest.Allowed(t, e.operator, attr) }
	if !review(authzv1.ResourceAttributes{Group: "moat.io", Resource: "identities", Verb: "delete"}) {
		t.Fatal("control: the operator may not delete identities")
	}
	for _, attr := range []authzv1.ResourceAttributes{
		{Resource: "secrets", Verb: "list"},
		{Resource: "secrets", Verb: "get", Namespace: opNS},
		{Resource: "pods", Verb: "delete", Namespace: "default"},
		{Resource: "configmaps", Verb: "get", Namespace: opNS},
		{Group: "moat.io", Resource: "identities", Verb: "create"},
		{Group: "moat.io", Resource: "networkpolicies", Verb: "update", Namespace: "default"},
		{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: opNS, Name: "other"},
		{Group: "coordination.k8s.io", Resource: "leases", Verb: "create", Namespace: "default"},
	} {
		if review(attr) {
			t.Errorf("the operator's role grants %s %s.%s %s/%s", attr.Verb, attr.Resource, attr.Group, attr.Namespace, attr.Name)
		}
	}
}

// TestOperatorMetricsLint: promlint over the operator's registry.
func TestOperatorMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.gcDeleted.Inc()
	problems, names, err := metricslint.Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 6 {
		t.Errorf("linted %d metrics, want 6: %v", len(names), names)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "moat_operator_") {
			t.Errorf("metric %s lacks the moat_operator_ prefix", n)
		}
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.REST = nil }, "no client configuration"},
		{func(c *Config) { c.Namespace = "" }, "no namespace"},
		{func(c *Config) { c.RenewDeadline = 20 * time.Second }, "renew deadline 20s must be shorter than the lease duration 15s"},
		{func(c *Config) { c.LabelFilter.Exclude = []string{"a*b"} }, `'*' is allowed only at the end`},
	} {
		c := Config{REST: &rest.Config{}, Namespace: "x"}
		tc.mod(&c)
		c.setDefaults()
		err := c.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate = %v, want %q", err, tc.want)
		}
	}
}
