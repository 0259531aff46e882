package identity

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/policy"
)

const testNS = "moat-system"

// startCluster starts a control plane with the Identity CRD and the agent
// namespace.
func startCluster(t *testing.T) *k8stest.Cluster {
	t.Helper()
	c := k8stest.Start(t)
	c.ApplyCRDs(t, "../../charts/moat/crds/moat.io_identities.yaml")
	c.MustKubectl(t, "create", "namespace", testNS)
	return c
}

type agent struct {
	*Allocator
	cancel context.CancelFunc
	done   chan struct{}
}

// startAgent runs an allocator with its own clients and informer, as one
// node's agent does, and stops it when the test ends.
func startAgent(t *testing.T, cfg *rest.Config, node string, mod func(*Config)) *agent {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "moat-agent/" + node
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := Config{Dynamic: dyn, Kube: kc, Namespace: testNS,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("node", node)}
	if mod != nil {
		mod(&c)
	}
	a, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ag := &agent{Allocator: a, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(ag.done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ag.done })
	sctx, scancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer scancel()
	if err := a.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return ag
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func labelSet(ns string, i int) policy.Labels {
	return PodLabels(ns, map[string]string{"app": fmt.Sprintf("app-%d", i)}, map[string]string{"team": "t"}, LabelFilter{})
}

// listIdentities returns every Identity object by name.
func listIdentities(t *testing.T, c *k8stest.Cluster) map[string]*Object {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(c.Config())
	l, err := dyn.Resource(Resource).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*Object{}
	for i := range l.Items {
		o, err := FromUnstructured(&l.Items[i])
		if err != nil {
			t.Fatal(err)
		}
		out[o.Name] = o
	}
	return out
}

// TestConcurrentAllocationTwoAgents: two agents (separate clients and
// informers) allocate the same 200 label sets at once, 8 goroutines each,
// in different orders: both get identical numbers, no number is shared and
// exactly 200 Identity objects exist.
func TestConcurrentAllocationTwoAgents(t *testing.T) {
	c := startCluster(t)
	const sets, workers = 200, 8
	agents := []*agent{startAgent(t, c.Config(), "node-a", nil), startAgent(t, c.Config(), "node-b", nil)}
	got := make([][]policy.ID, len(agents))
	var wg sync.WaitGroup
	errs := make(chan error, len(agents)*sets)
	start := time.Now()
	for ai, ag := range agents {
		got[ai] = make([]policy.ID, sets)
		order := rand.Perm(sets)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := w; j < sets; j += workers {
					i := order[j]
					id, err := ag.Allocate(labelSet("prod", i))
					if err != nil {
						errs <- fmt.Errorf("agent %d set %d: %w", ai, i, err)
						return
					}
					got[ai][i] = id
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	seen := map[policy.ID]int{}
	for i := range sets {
		if got[0][i] != got[1][i] {
			t.Errorf("set %d: agent a has %d, agent b has %d", i, got[0][i], got[1][i])
		}
		if got[0][i] < policy.IDFirstAllocated || got[0][i] >= policy.IDLocalFlag {
			t.Errorf("set %d: number %d outside the cluster-wide range", i, got[0][i])
		}
		if prev, dup := seen[got[0][i]]; dup {
			t.Errorf("sets %d and %d share number %d", prev, i, got[0][i])
		}
		seen[got[0][i]] = i
	}
	objs := listIdentities(t, c)
	if len(objs) != sets {
		t.Errorf("%d Identity objects, want %d", len(objs), sets)
	}
	for i := range sets {
		o := objs[ObjectName(labelSet("prod", i))]
		if o == nil || o.ID != got[0][i] {
			t.Errorf("set %d: object %v, want id %d", i, o, got[0][i])
		}
	}
	// Every agent answers Lookup for every number, including the ones it
	// did not create.
	for _, ag := range agents {
		for i := range sets {
			ls, ok := ag.Lookup(got[0][i])
			if !ok || ls.Key() != labelSet("prod", i).Key() {
				t.Errorf("Lookup(%d) = %v, %v", got[0][i], ls, ok)
			}
		}
	}
	sa, sb := agents[0].Stats(), agents[1].Stats()
	if sa.Created+sb.Created != sets {
		t.Errorf("created %d + %d objects, want %d in total", sa.Created, sb.Created, sets)
	}
	t.Logf("%d label sets on 2 agents x %d goroutines: %s; agent a %+v; agent b %+v", sets, workers, elapsed, sa, sb)

	// A second Allocate is a cache hit: no API request.
	before := agents[0].Stats().APIRequests
	for i := range sets {
		if id, err := agents[0].Allocate(labelSet("prod", i)); err != nil || id != got[0][i] {
			t.Fatalf("re-allocate set %d: %d, %v", i, id, err)
		}
	}
	if n := agents[0].Stats().APIRequests - before; n != 0 {
		t.Errorf("re-allocating held identities sent %d API requests, want 0", n)
	}
	// Release is reference counted and local.
	id := got[0][0]
	for range 2 {
		if err := agents[0].Release(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := agents[0].Release(id); err == nil || !strings.Contains(err.Error(), "not referenced") {
		t.Fatalf("third Release = %v, want not referenced", err)
	}
	if _, ok := agents[0].Lookup(id); !ok {
		t.Error("Lookup after Release: the identity still exists in the cluster")
	}
}

// TestHashCollisionGuard: an object with our label set's name but other
// labels (what a hash collision would look like) is an error, never a share.
func TestHashCollisionGuard(t *testing.T) {
	c := startCluster(t)
	ag := startAgent(t, c.Config(), "node-a", nil)
	mine, theirs := labelSet("prod", 1), labelSet("prod", 2)
	forged := NewUnstructured(theirs, 4000)
	forged.SetName(ObjectName(mine))
	dyn := dynamic.NewForConfigOrDie(c.Config())
	if _, err := dyn.Resource(Resource).Create(t.Context(), forged, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Positive control: an unrelated label set allocates.
	if _, err := ag.Allocate(labelSet("prod", 3)); err != nil {
		t.Fatalf("control allocation: %v", err)
	}
	_, err := ag.Allocate(mine)
	if err == nil || !strings.Contains(err.Error(), "hash collision") || !strings.Contains(err.Error(), ObjectName(mine)) {
		t.Fatalf("Allocate with a colliding object = %v, want a hash collision error naming %s", err, ObjectName(mine))
	}
	// Also when the object is not yet in the cache (the read goes to the API).
	other := labelSet("prod", 4)
	forged2 := NewUnstructured(theirs, 4001)
	forged2.SetName(ObjectName(other))
	ag2 := startAgent(t, c.Config(), "node-b", nil)
	if _, err := dyn.Resource(Resource).Create(t.Context(), forged2, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ag2.Allocate(other); err == nil || !strings.Contains(err.Error(), "hash collision") {
		t.Fatalf("Allocate with a colliding object (fresh) = %v, want a hash collision error", err)
	}
}

func counterValue(t *testing.T, c *k8stest.Cluster) string {
	t.Helper()
	cm, err := c.Client(t).CoreV1().ConfigMaps(testNS).Get(t.Context(), CounterName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[counterKey]
}

// TestCounterDeletedOrReset: a counter deleted or set back by a user never
// makes the allocator hand out a number an existing Identity holds.
func TestCounterDeletedOrReset(t *testing.T) {
	c := startCluster(t)
	ag := startAgent(t, c.Config(), "node-a", nil)
	used := map[policy.ID]int{}
	alloc := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id, err := ag.Allocate(labelSet("prod", i))
			if err != nil {
				t.Fatal(err)
			}
			if prev, dup := used[id]; dup {
				t.Fatalf("sets %d and %d share number %d", prev, i, id)
			}
			used[id] = i
		}
	}
	alloc(0, 5)
	if v := counterValue(t, c); v != "261" {
		t.Fatalf("counter = %q after 5 allocations, want 261", v)
	}
	cs := c.Client(t)
	t.Run("deleted", func(t *testing.T) {
		if err := cs.CoreV1().ConfigMaps(testNS).Delete(t.Context(), CounterName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		alloc(5, 10)
		if v := counterValue(t, c); v != "266" {
			t.Fatalf("counter = %q after re-creation, want 266", v)
		}
	})
	t.Run("reset", func(t *testing.T) {
		cm, err := cs.CoreV1().ConfigMaps(testNS).Get(t.Context(), CounterName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[counterKey] = "256"
		if _, err := cs.CoreV1().ConfigMaps(testNS).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		alloc(10, 15)
	})
	t.Run("garbage", func(t *testing.T) {
		cm, err := cs.CoreV1().ConfigMaps(testNS).Get(t.Context(), CounterName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[counterKey] = "not-a-number"
		if _, err := cs.CoreV1().ConfigMaps(testNS).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		alloc(15, 20)
	})
	t.Run("reset, cache behind", func(t *testing.T) {
		// An agent whose cache does not show the newest identities (here:
		// told to ignore what it saw) takes a number from a reset counter
		// that an existing Identity holds: the check after create finds
		// the duplicate, removes its own object and allocates again (above
		// every number its cache shows).
		ag.mu.Lock()
		ag.ignoreFloorOnce = true
		ag.mu.Unlock()
		cm, err := cs.CoreV1().ConfigMaps(testNS).Get(t.Context(), CounterName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data[counterKey] = "258"
		if _, err := cs.CoreV1().ConfigMaps(testNS).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		before := ag.Stats().Duplicates
		alloc(20, 21)
		if d := ag.Stats().Duplicates - before; d != 1 {
			t.Errorf("duplicates detected = %d, want 1", d)
		}
	})
	byID := map[policy.ID]string{}
	for name, o := range listIdentities(t, c) {
		if prev, dup := byID[o.ID]; dup {
			t.Errorf("identities %s and %s share number %d", prev, name, o.ID)
		}
		byID[o.ID] = name
	}
	if len(byID) != 21 {
		t.Errorf("%d identities, want 21", len(byID))
	}
}

// TestDeletedWhileInUse: an identity this agent uses, deleted by a user (or
// a GC race), is created again; its new number reaches OnChange.
func TestDeletedWhileInUse(t *testing.T) {
	c := startCluster(t)
	type change struct {
		ls       policy.Labels
		old, new policy.ID
	}
	changes := make(chan change, 4)
	ag := startAgent(t, c.Config(), "node-a", func(cfg *Config) {
		cfg.OnChange = func(ls policy.Labels, old, new policy.ID) { changes <- change{ls, old, new} }
	})
	ls := labelSet("prod", 1)
	old, err := ag.Allocate(ls)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(c.Config())
	if err := dyn.Resource(Resource).Delete(t.Context(), ObjectName(ls), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var ch change
	select {
	case ch = <-changes:
	case <-time.After(30 * time.Second):
		t.Fatal("no OnChange within 30s after the identity was deleted")
	}
	if ch.ls.Key() != ls.Key() || ch.old != old || ch.new == old {
		t.Fatalf("OnChange(%s, %d, %d), want (%s, %d, new)", ch.ls, ch.old, ch.new, ls, old)
	}
	o := listIdentities(t, c)[ObjectName(ls)]
	if o == nil || o.ID != ch.new || !sameSpecLabels(o.SpecLabels, SpecLabels(ls)) {
		t.Fatalf("re-created identity = %+v, want id %d with our labels", o, ch.new)
	}
	if s := ag.Stats(); s.Recreated != 1 || s.Renumbered != 1 {
		t.Errorf("stats %+v, want Recreated 1, Renumbered 1", s)
	}
	// The reference moved to the new number; Release takes either.
	if id, err := ag.Allocate(ls); err != nil || id != ch.new {
		t.Fatalf("Allocate after re-creation = %d, %v, want %d", id, err, ch.new)
	}
	if err := ag.Release(old); err != nil {
		t.Fatal(err)
	}
	if err := ag.Release(ch.new); err != nil {
		t.Fatal(err)
	}
	if err := ag.Release(ch.new); err == nil {
		t.Fatal("a third Release succeeded")
	}
}

// TestUnusedMarkRemoved: an agent using an identity removes the operator's
// unused mark, which makes a delete with the marked resourceVersion fail.
func TestUnusedMarkRemoved(t *testing.T) {
	c := startCluster(t)
	ag := startAgent(t, c.Config(), "node-a", nil)
	dyn := dynamic.NewForConfigOrDie(c.Config())
	ls := labelSet("prod", 1)
	if _, err := ag.Allocate(ls); err != nil {
		t.Fatal(err)
	}
	name := ObjectName(ls)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, AnnotationUnusedSince, time.Now().UTC().Format(time.RFC3339))
	marked, err := dyn.Resource(Resource).Patch(t.Context(), name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		u, err := dyn.Resource(Resource).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := u.GetAnnotations()[AnnotationUnusedSince]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent did not remove the unused mark within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rv := marked.GetResourceVersion()
	err = dyn.Resource(Resource).Delete(t.Context(), name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if !apierrors.IsConflict(err) {
		t.Fatalf("delete with the marked resourceVersion = %v, want a Conflict", err)
	}
	if s := ag.Stats(); s.UnmarkedUnused != 1 {
		t.Errorf("UnmarkedUnused = %d, want 1", s.UnmarkedUnused)
	}
	// A marked identity this agent starts using is unmarked before use.
	ls2 := labelSet("prod", 2)
	pre := NewUnstructured(ls2, 5000)
	pre.SetAnnotations(map[string]string{AnnotationUnusedSince: time.Now().UTC().Format(time.RFC3339)})
	if _, err := dyn.Resource(Resource).Create(t.Context(), pre, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ag2 := startAgent(t, c.Config(), "node-b", nil)
	if id, err := ag2.Allocate(ls2); err != nil || id != 5000 {
		t.Fatalf("Allocate of a marked identity = %d, %v, want 5000", id, err)
	}
	u, err := dyn.Resource(Resource).Get(t.Context(), ObjectName(ls2), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := u.GetAnnotations()[AnnotationUnusedSince]; ok {
		t.Fatalf("unused mark %q still there after Allocate returned", v)
	}
}

var _ = corev1.ConfigMap{}
