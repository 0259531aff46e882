package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/internal/k8stest"
)

// applyChartRBAC applies a chart RBAC template, whose only templating is
// the release namespace.
func applyChartRBAC(t *testing.T, c *k8stest.Cluster, file, ns string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "charts", "moat", "templates", file))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), file)
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(data), "{{ .Release.Namespace }}", ns)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.MustKubectl(t, "apply", "-f", out)
}

// canI asks the apiserver whether cfg's user may do verb on resource.
func canI(t *testing.T, cfg *rest.Config, attr authzv1.ResourceAttributes) bool {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(),
		&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attr}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

// TestAllocatorRBAC: the agent's identity rules in the chart are enough for
// everything the allocator does (allocate, race, counter creation, unmark,
// re-create), and grant nothing unrelated.
func TestAllocatorRBAC(t *testing.T) {
	c := startCluster(t)
	applyChartRBAC(t, c, "rbac-agent.yaml", testNS)
	sa := c.ServiceAccountConfig(t, testNS, "moat-agent")

	// Negative checks first, with a positive control through the same path.
	if !canI(t, sa, authzv1.ResourceAttributes{Group: "moat.io", Resource: "identities", Verb: "create"}) {
		t.Fatal("control: the agent may not create identities")
	}
	for _, attr := range []authzv1.ResourceAttributes{
		{Resource: "secrets", Verb: "list"},
		{Resource: "secrets", Verb: "get", Namespace: testNS},
		{Resource: "configmaps", Verb: "update", Namespace: testNS, Name: "kube-root-ca.crt"},
		{Resource: "configmaps", Verb: "list", Namespace: testNS},
		{Resource: "configmaps", Verb: "create", Namespace: "default"},
		{Group: "moat.io", Resource: "identities", Verb: "update"},
	} {
		if canI(t, sa, attr) {
			t.Errorf("the agent's role grants %s %s %s/%s", attr.Verb, attr.Resource, attr.Namespace, attr.Name)
		}
	}

	a := startAgent(t, sa, "node-a", nil)
	b := startAgent(t, sa, "node-b", nil)
	for i := range 20 {
		ls := labelSet("prod", i)
		ia, err := a.Allocate(ls)
		if err != nil {
			t.Fatalf("agent a, set %d: %v", i, err)
		}
		ib, err := b.Allocate(ls)
		if err != nil || ib != ia {
			t.Fatalf("agent b, set %d: %d, %v, want %d", i, ib, err, ia)
		}
	}
	// Counter deleted: the agent re-creates it with its role.
	if err := c.Client(t).CoreV1().ConfigMaps(testNS).Delete(t.Context(), CounterName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(labelSet("prod", 100)); err != nil {
		t.Fatalf("allocate after the counter was deleted: %v", err)
	}
}
