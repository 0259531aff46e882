package identity

import (
	"path/filepath"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moatnet/moat/internal/k8stest"
)

// applyChartRBAC applies a chart RBAC template in namespace ns.
func applyChartRBAC(t *testing.T, c *k8stest.Cluster, file, ns string) {
	t.Helper()
	c.ApplyTemplate(t, filepath.Join("..", "..", "charts", "moat", "templates", file), ns)
}

// TestAllocatorRBAC: the agent's identity rules in the chart are enough for
// everything the allocator does (allocate, race, counter creation, unmark,
// re-create), and grant nothing unrelated.
func TestAllocatorRBAC(t *testing.T) {
	c := startCluster(t)
	applyChartRBAC(t, c, "rbac-agent.yaml", testNS)
	sa := c.ServiceAccountConfig(t, testNS, "moat-agent")

	// Negative checks first, with a positive control through the same path.
	if !k8stest.Allowed(t, sa, authzv1.ResourceAttributes{Group: "moat.io", Resource: "identities", Verb: "create"}) {
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
		if k8stest.Allowed(t, sa, attr) {
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
