package identity

// This file owns the cluster-wide Allocator: lookups from an informer cache
// of Identity objects, allocation through the API on a cache miss,
// references counted in memory, and the repair of identities this agent
// uses when they are deleted or marked unused.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/moatnet/moat/policy"
)

// indexID indexes the informer cache by identity number.
const indexID = "id"

// maxResolveAttempts bounds the create/read loop of one allocation (lost
// races, a deletion between read and use, a duplicate number).
const maxResolveAttempts = 10

// Config configures an Allocator.
type Config struct {
	// Dynamic reads and writes Identity objects. Required.
	Dynamic dynamic.Interface
	// Kube reads and writes the counter ConfigMap. Required.
	Kube kubernetes.Interface
	// Namespace holds the counter ConfigMap (the agent's namespace).
	// Required.
	Namespace string
	// CounterName is the counter ConfigMap's name; default CounterName.
	CounterName string
	// Timeout bounds one Allocate; default 30s.
	Timeout time.Duration
	// CacheTimeout bounds the wait for this agent's informer to show an
	// object it just created or read; default 10s.
	CacheTimeout time.Duration
	// OnChange, if set, is called (from the allocator's own goroutine) when
	// the number of a label set this agent references changes: its Identity
	// was deleted and re-created with another number. References move to the
	// new number; Release accepts either.
	OnChange func(ls policy.Labels, old, new policy.ID)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.CounterName == "" {
		c.CounterName = CounterName
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.CacheTimeout == 0 {
		c.CacheTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.Dynamic == nil:
		return errors.New("identity allocator: no dynamic client")
	case c.Kube == nil:
		return errors.New("identity allocator: no kubernetes client")
	case c.Namespace == "":
		return errors.New("identity allocator: no namespace for the counter ConfigMap")
	case c.Timeout < 0 || c.CacheTimeout < 0:
		return errors.New("identity allocator: negative timeout")
	}
	return nil
}

// Stats counts what an Allocator did, for metrics and tests.
type Stats struct {
	// APIRequests is the number of requests sent to the apiserver (the
	// informer's list and watch not included).
	APIRequests uint64
	// Created counts Identity objects this agent created.
	Created uint64
	// LostRaces counts creates that found the object already there.
	LostRaces uint64
	// CounterConflicts counts counter updates refused on resourceVersion.
	CounterConflicts uint64
	// Recreated counts identities this agent used that were deleted and
	// given a (possibly new) number again.
	Recreated uint64
	// Renumbered counts label sets whose number changed for this agent.
	Renumbered uint64
	// UnmarkedUnused counts removals of AnnotationUnusedSince.
	UnmarkedUnused uint64
	// Duplicates counts numbers found on two identities (a reset counter).
	Duplicates uint64
}

type statsCounters struct {
	apiRequests, created, lostRaces, counterConflicts atomic.Uint64
	recreated, renumbered, unmarkedUnused, duplicates atomic.Uint64
}

type heldIdentity struct {
	labels policy.Labels
	spec   map[string]string
	id     policy.ID
	ids    []policy.ID // every number the references were taken under
	refs   int
}

// Allocator is the cluster-wide policy.Allocator. It is safe for concurrent
// use. Allocate and Release work only while Run runs.
type Allocator struct {
	cfg      Config
	log      *slog.Logger
	informer cache.SharedIndexInformer
	counter  *counter
	stats    statsCounters
	queue    workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	runCtx   context.Context
	held     map[string]*heldIdentity // by object name
	byID     map[policy.ID]string     // object name by number, for held ones
	inflight map[string]chan struct{}
	maxSeen  policy.ID
	changed  chan struct{} // closed and replaced on every cache event

	// ignoreFloorOnce makes the counter the only source of the next number,
	// as for an agent whose cache has not yet seen the newest identities;
	// tests use it to exercise the duplicate check after create.
	ignoreFloorOnce bool
}

var _ policy.Allocator = (*Allocator)(nil)

// New builds an Allocator; Run starts it.
func New(cfg Config) (*Allocator, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Allocator{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "identity-allocator"),
		held:     map[string]*heldIdentity{},
		byID:     map[policy.ID]string{},
		inflight: map[string]chan struct{}{},
		changed:  make(chan struct{}),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "identity-repair"}),
	}
	a.counter = &counter{cs: cfg.Kube, namespace: cfg.Namespace, name: cfg.CounterName, log: a.log, stats: &a.stats}
	a.informer = dynamicinformer.NewFilteredDynamicInformer(cfg.Dynamic, Resource, "", 0,
		cache.Indexers{indexID: indexByID}, nil).Informer()
	// managedFields are most of an Identity's bytes and never read here.
	if err := a.informer.SetTransform(func(obj any) (any, error) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			u.SetManagedFields(nil)
		}
		return obj, nil
	}); err != nil {
		return nil, fmt.Errorf("identity allocator: set transform: %w", err)
	}
	if _, err := a.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.observe(obj, false) },
		UpdateFunc: func(_, obj any) { a.observe(obj, false) },
		DeleteFunc: func(obj any) { a.observe(obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("identity allocator: add event handler: %w", err)
	}
	return a, nil
}

func indexByID(obj any) ([]string, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, nil
	}
	id, ok, _ := unstructured.NestedInt64(u.Object, "spec", "id")
	if !ok {
		return nil, nil
	}
	return []string{strconv.FormatInt(id, 10)}, nil
}

// Informer is the allocator's cache of Identity objects (unstructured),
// indexed by number; other components may read it.
func (a *Allocator) Informer() cache.SharedIndexInformer { return a.informer }

// Run runs the informer and the repair loop until ctx ends.
func (a *Allocator) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.runCtx != nil {
		a.mu.Unlock()
		return errors.New("identity allocator: already running")
	}
	a.runCtx = ctx
	a.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.informer.Run(ctx.Done()) }()
	go func() { defer wg.Done(); a.repairLoop(ctx) }()
	<-ctx.Done()
	a.queue.ShutDown()
	wg.Wait()
	return nil
}

// WaitForSync waits until the informer has listed every Identity.
func (a *Allocator) WaitForSync(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), a.informer.HasSynced) {
		return fmt.Errorf("identity allocator: cache not synced: %w", ctx.Err())
	}
	return nil
}

// Stats returns the allocator's counters.
func (a *Allocator) Stats() Stats {
	s := &a.stats
	return Stats{
		APIRequests: s.apiRequests.Load(), Created: s.created.Load(), LostRaces: s.lostRaces.Load(),
		CounterConflicts: s.counterConflicts.Load(), Recreated: s.recreated.Load(),
		Renumbered: s.renumbered.Load(), UnmarkedUnused: s.unmarkedUnused.Load(),
		Duplicates: s.duplicates.Load(),
	}
}

// observe handles an informer event: it tracks the highest number seen,
// wakes waiters, and queues a repair when an identity this agent holds is
// deleted, marked unused, or replaced.
func (a *Allocator) observe(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	o, err := FromUnstructured(u)
	a.mu.Lock()
	defer a.mu.Unlock()
	close(a.changed)
	a.changed = make(chan struct{})
	if err != nil {
		a.log.Warn("ignoring malformed identity", "err", err)
		return
	}
	a.maxSeen = max(a.maxSeen, o.ID)
	h := a.held[o.Name]
	if h == nil {
		return
	}
	if deleted || o.UnusedSince != "" || o.ID != h.id {
		a.queue.Add(o.Name)
	}
}

// Allocate implements policy.Allocator: it returns the cluster-wide number
// of ls and takes a reference on it.
func (a *Allocator) Allocate(ls policy.Labels) (policy.ID, error) {
	a.mu.Lock()
	runCtx := a.runCtx
	a.mu.Unlock()
	if runCtx == nil {
		return 0, fmt.Errorf("allocate identity for %s: allocator not running", ls)
	}
	ctx, cancel := context.WithTimeout(runCtx, a.cfg.Timeout)
	defer cancel()
	id, err := a.allocate(ctx, ls)
	if err != nil {
		return 0, fmt.Errorf("allocate identity for %s: %w", ls, err)
	}
	return id, nil
}

func (a *Allocator) allocate(ctx context.Context, ls policy.Labels) (policy.ID, error) {
	if len(ls) == 0 {
		return 0, errors.New("empty label set")
	}
	if !a.informer.HasSynced() {
		if err := a.WaitForSync(ctx); err != nil {
			return 0, err
		}
	}
	name, spec := ObjectName(ls), SpecLabels(ls)
	for {
		a.mu.Lock()
		if h := a.held[name]; h != nil {
			if !sameSpecLabels(h.spec, spec) {
				a.mu.Unlock()
				return 0, fmt.Errorf("hash collision: %s and %s both map to identity object %s", ls, h.labels, name)
			}
			h.refs++
			id := h.id
			a.mu.Unlock()
			return id, nil
		}
		if wait := a.inflight[name]; wait != nil {
			a.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		done := make(chan struct{})
		a.inflight[name] = done
		a.mu.Unlock()

		id, err := a.resolve(ctx, name, ls, spec)

		a.mu.Lock()
		delete(a.inflight, name)
		close(done)
		if err == nil {
			a.held[name] = &heldIdentity{labels: cloneLabels(ls), spec: spec, id: id, ids: []policy.ID{id}, refs: 1}
			a.byID[id] = name
		}
		a.mu.Unlock()
		return id, err
	}
}

// Release implements policy.Allocator: it drops one reference. Nothing is
// written to the API; moat-operator collects identities no pod uses.
func (a *Allocator) Release(id policy.ID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	name, ok := a.byID[id]
	h := a.held[name]
	if !ok || h == nil || h.refs == 0 {
		return fmt.Errorf("release identity %d: not referenced", id)
	}
	h.refs--
	if h.refs == 0 {
		for _, old := range h.ids {
			delete(a.byID, old)
		}
		delete(a.held, name)
	}
	return nil
}

// Lookup implements policy.Allocator: the labels of any identity in the
// cluster (from the cache), or of one this agent holds.
func (a *Allocator) Lookup(id policy.ID) (policy.Labels, bool) {
	a.mu.Lock()
	if name, ok := a.byID[id]; ok {
		if h := a.held[name]; h != nil && h.id == id {
			ls := h.labels
			a.mu.Unlock()
			return ls, true
		}
	}
	a.mu.Unlock()
	objs, err := a.informer.GetIndexer().ByIndex(indexID, strconv.FormatUint(uint64(id), 10))
	if err != nil || len(objs) != 1 {
		return nil, false // absent, or a duplicate number: no answer rather than a wrong one
	}
	o, err := FromUnstructured(objs[0].(*unstructured.Unstructured))
	if err != nil {
		return nil, false
	}
	ls, err := o.Labels()
	if err != nil {
		return nil, false
	}
	return ls, true
}

// resolve finds or creates the Identity of ls and returns its number, once
// this agent's cache shows that number on no other identity and the object
// carries no unused mark.
func (a *Allocator) resolve(ctx context.Context, name string, ls policy.Labels, spec map[string]string) (policy.ID, error) {
	for attempt := 0; attempt < maxResolveAttempts; attempt++ {
		o, err := a.cached(name)
		if err != nil {
			return 0, err
		}
		if o == nil {
			u, err := a.cfg.Dynamic.Resource(Resource).Get(ctx, name, metav1.GetOptions{})
			a.stats.apiRequests.Add(1)
			switch {
			case apierrors.IsNotFound(err):
			case err != nil:
				return 0, fmt.Errorf("read identity %s: %w", name, err)
			default:
				if o, err = FromUnstructured(u); err != nil {
					return 0, err
				}
			}
		}
		if o != nil {
			if !sameSpecLabels(o.SpecLabels, spec) {
				return 0, fmt.Errorf("hash collision: identity %s holds labels %v, not %v", name, o.SpecLabels, spec)
			}
			if err := a.usable(ctx, o); err != nil {
				return 0, err
			}
			if o.UnusedSince != "" {
				gone, err := a.unmarkUnused(ctx, name)
				if err != nil {
					return 0, err
				}
				if gone {
					continue
				}
			}
			return o.ID, nil
		}

		a.mu.Lock()
		floor := a.maxSeen + 1
		if a.ignoreFloorOnce {
			floor, a.ignoreFloorOnce = 0, false
		}
		a.mu.Unlock()
		n, err := a.counter.take(ctx, floor)
		if err != nil {
			return 0, err
		}
		u, err := a.cfg.Dynamic.Resource(Resource).Create(ctx, NewUnstructured(ls, n), metav1.CreateOptions{})
		a.stats.apiRequests.Add(1)
		if apierrors.IsAlreadyExists(err) {
			a.stats.lostRaces.Add(1)
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("create identity %s (id %d): %w", name, n, err)
		}
		a.stats.created.Add(1)
		if err := a.waitCached(ctx, name, u.GetUID()); err != nil {
			return 0, err
		}
		if others := a.othersWithID(n, name); len(others) > 0 {
			a.stats.duplicates.Add(1)
			a.log.Error("identity number already held by another identity: the identity counter was reset or edited; allocating again",
				"id", uint32(n), "identity", name, "others", others)
			uid := u.GetUID()
			err := a.cfg.Dynamic.Resource(Resource).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			a.stats.apiRequests.Add(1)
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return 0, fmt.Errorf("delete identity %s with duplicate id %d: %w", name, n, err)
			}
			if err := a.waitGone(ctx, name, uid); err != nil {
				return 0, err
			}
			continue
		}
		return n, nil
	}
	return 0, fmt.Errorf("identity %s: no stable identity after %d attempts", name, maxResolveAttempts)
}

// usable waits until the cache holds o (so that every identity created
// before it is visible too) and refuses a number another identity holds.
func (a *Allocator) usable(ctx context.Context, o *Object) error {
	if err := a.waitCached(ctx, o.Name, o.UID); err != nil {
		return err
	}
	if others := a.othersWithID(o.ID, o.Name); len(others) > 0 {
		a.stats.duplicates.Add(1)
		return fmt.Errorf("identity number %d is held by %s and by %v: refusing to use it until the newer one is removed (was the identity counter reset?)",
			uint32(o.ID), o.Name, others)
	}
	return nil
}

// unmarkUnused removes AnnotationUnusedSince; the update changes the
// resourceVersion, so moat-operator's pending delete fails. gone reports
// that the identity no longer exists.
func (a *Allocator) unmarkUnused(ctx context.Context, name string) (gone bool, err error) {
	patch := []byte(`{"metadata":{"annotations":{"` + AnnotationUnusedSince + `":null}}}`)
	_, err = a.cfg.Dynamic.Resource(Resource).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	a.stats.apiRequests.Add(1)
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("remove %s from identity %s: %w", AnnotationUnusedSince, name, err)
	}
	a.stats.unmarkedUnused.Add(1)
	a.log.Info("identity in use again: removed its unused mark", "identity", name)
	return false, nil
}

func (a *Allocator) cached(name string) (*Object, error) {
	obj, ok, err := a.informer.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, err
	}
	return FromUnstructured(obj.(*unstructured.Unstructured))
}

// waitCached waits until the cache holds the object name with uid, or a
// newer object of that name.
func (a *Allocator) waitCached(ctx context.Context, name string, uid types.UID) error {
	return a.waitCache(ctx, func() bool {
		o, err := a.cached(name)
		return err == nil && o != nil && o.UID == uid
	}, "identity %s to appear in the cache", name)
}

// waitGone waits until the cache no longer holds the object name with uid.
func (a *Allocator) waitGone(ctx context.Context, name string, uid types.UID) error {
	return a.waitCache(ctx, func() bool {
		o, err := a.cached(name)
		return err == nil && (o == nil || o.UID != uid)
	}, "identity %s to leave the cache", name)
}

func (a *Allocator) waitCache(ctx context.Context, cond func() bool, format string, args ...any) error {
	timer := time.NewTimer(a.cfg.CacheTimeout)
	defer timer.Stop()
	for {
		a.mu.Lock()
		changed := a.changed
		a.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for "+format+": %w", append(args, ctx.Err())...)
		case <-timer.C:
			return fmt.Errorf("wait for "+format+": not seen within %s", append(args, a.cfg.CacheTimeout)...)
		}
	}
}

// othersWithID returns the names of cached identities other than name that
// hold number id.
func (a *Allocator) othersWithID(id policy.ID, name string) []string {
	objs, err := a.informer.GetIndexer().ByIndex(indexID, strconv.FormatUint(uint64(id), 10))
	if err != nil {
		return nil
	}
	var out []string
	for _, obj := range objs {
		if u := obj.(*unstructured.Unstructured); u.GetName() != name {
			out = append(out, u.GetName())
		}
	}
	return out
}

// repairLoop keeps the identities this agent holds present and unmarked.
func (a *Allocator) repairLoop(ctx context.Context) {
	for {
		name, quit := a.queue.Get()
		if quit {
			return
		}
		if err := a.repair(ctx, name); err != nil {
			if ctx.Err() == nil {
				a.log.Warn("identity repair failed; retrying", "identity", name, "err", err)
				a.queue.AddRateLimited(name)
			}
		} else {
			a.queue.Forget(name)
		}
		a.queue.Done(name)
	}
}

func (a *Allocator) repair(ctx context.Context, name string) error {
	a.mu.Lock()
	h := a.held[name]
	var ls policy.Labels
	var spec map[string]string
	var old policy.ID
	if h != nil {
		ls, spec, old = h.labels, h.spec, h.id
	}
	a.mu.Unlock()
	if h == nil {
		return nil
	}
	o, err := a.cached(name)
	if err != nil {
		return err
	}
	if o != nil && o.ID == old && o.UnusedSince == "" {
		return nil
	}
	if o == nil {
		a.stats.recreated.Add(1)
		a.log.Warn("identity in use was deleted; re-creating it", "identity", name, "id", uint32(old), "labels", ls.String())
	}
	rctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	id, err := a.resolve(rctx, name, ls, spec)
	if err != nil {
		return err
	}
	a.mu.Lock()
	h = a.held[name]
	changed := h != nil && h.id != id
	if changed {
		h.id = id
		h.ids = append(h.ids, id)
		a.byID[id] = name
	}
	a.mu.Unlock()
	if changed {
		a.stats.renumbered.Add(1)
		a.log.Warn("identity renumbered", "identity", name, "old", uint32(old), "new", uint32(id), "labels", ls.String())
		if a.cfg.OnChange != nil {
			a.cfg.OnChange(ls, old, id)
		}
	}
	return nil
}

func cloneLabels(ls policy.Labels) policy.Labels {
	out := make(policy.Labels, len(ls))
	for k, v := range ls {
		out[k] = v
	}
	return out
}
