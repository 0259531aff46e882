package operator

// This file owns identity garbage collection: mark identities no pod uses,
// delete them once the grace period has passed if still unused and
// unchanged, unmark those in use again.

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/moatnet/moat/k8s/identity"
)

type identityGC struct {
	o          *Operator
	pods       cache.SharedIndexInformer
	namespaces cache.Store
	nsSynced   cache.InformerSynced
	identities cache.SharedIndexInformer
}

func newGC(o *Operator, pods cache.SharedIndexInformer, namespaces cache.SharedIndexInformer, df dynamicinformer.DynamicSharedInformerFactory) *identityGC {
	return &identityGC{
		o: o, pods: pods, namespaces: namespaces.GetStore(), nsSynced: namespaces.HasSynced,
		identities: df.ForResource(identity.Resource).Informer(),
	}
}

func (g *identityGC) run(ctx context.Context) {
	if !cache.WaitForCacheSync(ctx.Done(), g.pods.HasSynced, g.nsSynced, g.identities.HasSynced) {
		return
	}
	t := time.NewTicker(g.o.cfg.IdentityGCInterval)
	defer t.Stop()
	for {
		if err := g.pass(ctx); err != nil && ctx.Err() == nil {
			g.o.metrics.reconcileErrors.WithLabelValues("identity-gc").Inc()
			g.o.log.Warn("identity GC pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// used returns the names of the Identity objects the cluster's pods need.
func (g *identityGC) used() (map[string]bool, error) {
	nsLabels := map[string]map[string]string{}
	for _, obj := range g.namespaces.List() {
		ns := obj.(*corev1.Namespace)
		nsLabels[ns.Name] = ns.Labels
	}
	used := map[string]bool{}
	for _, obj := range g.pods.GetStore().List() {
		pod := obj.(*corev1.Pod)
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue // finished pods have no endpoint and need no identity
		}
		nl, ok := nsLabels[pod.Namespace]
		if !ok {
			// Without its namespace's labels the pod's label set is
			// unknown; collecting now could delete the identity it uses.
			return nil, fmt.Errorf("namespace %s of pod %s not in the cache yet; skipping this pass", pod.Namespace, pod.Name)
		}
		if nl == nil {
			nl = map[string]string{}
		}
		used[identity.ObjectName(identity.PodLabels(pod.Namespace, pod.Labels, nl, g.o.cfg.LabelFilter))] = true
	}
	return used, nil
}

// pass runs one collection over every identity.
func (g *identityGC) pass(ctx context.Context) error {
	used, err := g.used()
	if err != nil {
		return err
	}
	now := g.o.cfg.Now()
	grace := g.o.cfg.IdentityGCGrace
	var total, marked int
	var firstErr error
	for _, obj := range g.identities.GetStore().List() {
		u := obj.(*unstructured.Unstructured)
		id, err := identity.FromUnstructured(u)
		if err != nil {
			g.o.log.Warn("identity GC: skipping malformed identity", "err", err)
			continue
		}
		total++
		var opErr error
		switch {
		case used[id.Name]:
			if id.UnusedSince != "" {
				opErr = g.setMark(ctx, id, nil)
			}
		case id.UnusedSince == "":
			// A fresh identity may belong to a pod this replica has not
			// seen yet: leave it a grace period before marking it.
			if now.Sub(id.Created) >= grace {
				ts := now.UTC().Format(time.RFC3339Nano)
				opErr = g.setMark(ctx, id, &ts)
				marked++
			}
		default:
			marked++
			since, err := time.Parse(time.RFC3339, id.UnusedSince)
			if err != nil {
				ts := now.UTC().Format(time.RFC3339Nano)
				opErr = g.setMark(ctx, id, &ts)
				break
			}
			if now.Sub(since) >= grace {
				if deleted, err := g.delete(ctx, id); err != nil {
					opErr = err
				} else if deleted {
					marked--
					total--
				}
			}
		}
		if opErr != nil && firstErr == nil {
			firstErr = opErr
		}
	}
	g.o.metrics.identities.Set(float64(total))
	g.o.metrics.markedUnused.Set(float64(marked))
	return firstErr
}

// setMark sets (ts != nil) or removes the unused mark, with a
// resourceVersion precondition so a concurrent change wins.
func (g *identityGC) setMark(ctx context.Context, id *identity.Object, ts *string) error {
	val := "null"
	if ts != nil {
		val = fmt.Sprintf("%q", *ts)
	}
	patch := fmt.Appendf(nil, `{"metadata":{"resourceVersion":%q,"annotations":{%q:%s}}}`, id.ResourceVersion, identity.AnnotationUnusedSince, val)
	_, err := g.o.dyn.Resource(identity.Resource).Patch(ctx, id.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return nil // changed meanwhile: the next pass sees the new state
	case err != nil:
		return fmt.Errorf("identity %s: set %s: %w", id.Name, identity.AnnotationUnusedSince, err)
	}
	if ts != nil {
		g.o.log.Info("identity unused: marked", "identity", id.Name, "id", uint32(id.ID))
	} else {
		g.o.log.Info("identity in use again: unmarked", "identity", id.Name, "id", uint32(id.ID))
	}
	return nil
}

// delete removes an identity unused for the grace period, only if it is
// still the object that was marked (same resourceVersion): an agent that
// started using it removed the mark, which changed the resourceVersion.
func (g *identityGC) delete(ctx context.Context, id *identity.Object) (bool, error) {
	rv, uid := id.ResourceVersion, id.UID
	err := g.o.dyn.Resource(identity.Resource).Delete(ctx, id.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{ResourceVersion: &rv, UID: &uid},
	})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		g.o.log.Info("identity changed or gone since it was marked; not deleting", "identity", id.Name)
		return false, nil
	case err != nil:
		return false, fmt.Errorf("delete unused identity %s: %w", id.Name, err)
	}
	g.o.metrics.gcDeleted.Inc()
	g.o.log.Info("identity unused for the grace period: deleted", "identity", id.Name, "id", uint32(id.ID), "unused_since", id.UnusedSince)
	return true, nil
}
