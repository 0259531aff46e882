package operator

// This file owns policy status: every moat.io NetworkPolicy and
// ClusterwideNetworkPolicy gets a Valid condition computed by the same
// parser and validator as `moat policy validate`, and an Event when the
// verdict changes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"

	"github.com/moatnet/moat/api/v1alpha1"
	"github.com/moatnet/moat/policy"
)

// Policy resources whose status the operator writes.
var (
	NetworkPolicyResource            = v1alpha1.GroupVersion.WithResource("networkpolicies")
	ClusterwideNetworkPolicyResource = v1alpha1.GroupVersion.WithResource("clusterwidenetworkpolicies")
)

// Condition type and reasons of a policy's status.
const (
	ConditionValid = "Valid"
	ReasonValid    = "Valid"
	ReasonInvalid  = "Invalid"
	// MessageValid is the message of Valid=True.
	MessageValid = "moat accepts this policy"
)

type policyKey struct {
	gvr       schema.GroupVersionResource
	namespace string
	name      string
}

func (k policyKey) storeKey() string {
	if k.namespace == "" {
		return k.name
	}
	return k.namespace + "/" + k.name
}

type statusController struct {
	o           *Operator
	informers   map[schema.GroupVersionResource]cache.SharedIndexInformer
	queue       workqueue.TypedRateLimitingInterface[policyKey]
	broadcaster events.EventBroadcaster
	recorder    events.EventRecorder

	mu    sync.Mutex
	valid map[policyKey]bool
}

func newStatusController(o *Operator, df dynamicinformer.DynamicSharedInformerFactory) (*statusController, error) {
	s := &statusController{
		o:         o,
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[policyKey](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[policyKey]{Name: "policy-status"}),
		valid: map[policyKey]bool{},
	}
	for _, gvr := range []schema.GroupVersionResource{NetworkPolicyResource, ClusterwideNetworkPolicyResource} {
		inf := df.ForResource(gvr).Informer()
		enqueue := func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				s.queue.Add(policyKey{gvr: gvr, namespace: u.GetNamespace(), name: u.GetName()})
			}
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
		}); err != nil {
			return nil, fmt.Errorf("policy status: add event handler: %w", err)
		}
		s.informers[gvr] = inf
	}
	return s, nil
}

func (s *statusController) run(ctx context.Context) {
	s.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: s.o.kube.EventsV1()})
	if err := s.broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		s.o.log.Error("policy status: events", "err", err)
	}
	s.recorder = s.broadcaster.NewRecorder(scheme.Scheme, "moat-operator")
	defer s.broadcaster.Shutdown()
	defer s.queue.ShutDown()
	go func() { <-ctx.Done(); s.queue.ShutDown() }()

	synced := make([]cache.InformerSynced, 0, len(s.informers))
	for _, inf := range s.informers {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	for {
		k, quit := s.queue.Get()
		if quit {
			return
		}
		if err := s.reconcile(ctx, k); err != nil && ctx.Err() == nil {
			s.o.metrics.reconcileErrors.WithLabelValues("policy-status").Inc()
			s.o.log.Warn("policy status", "policy", k.storeKey(), "resource", k.gvr.Resource, "err", err)
			s.queue.AddRateLimited(k)
		} else {
			s.queue.Forget(k)
		}
		s.queue.Done(k)
	}
}

// Validate runs `moat policy validate`'s parser and validator over one
// policy object and returns the Valid condition's status and message: the
// field path and reason of each error, one per line, as the CLI prints them
// after the file and document.
func Validate(obj *unstructured.Unstructured) (metav1.ConditionStatus, string, error) {
	doc := make(map[string]any, len(obj.Object))
	for k, v := range obj.Object {
		if k != "status" && k != "metadata" {
			doc[k] = v
		}
	}
	meta := map[string]any{"name": obj.GetName()}
	if ns := obj.GetNamespace(); ns != "" {
		meta["namespace"] = ns
	}
	doc["metadata"] = meta
	data, err := json.Marshal(doc)
	if err != nil {
		return "", "", fmt.Errorf("encode policy %s: %w", obj.GetName(), err)
	}
	_, err = policy.ParseBytes("", data)
	var list policy.ErrorList
	switch {
	case err == nil:
		return metav1.ConditionTrue, MessageValid, nil
	case !errors.As(err, &list):
		return "", "", fmt.Errorf("validate policy %s: %w", obj.GetName(), err)
	}
	lines := make([]string, len(list))
	for i, fe := range list {
		plain := *fe
		plain.File, plain.Doc = "", 0
		lines[i] = plain.Error()
	}
	return metav1.ConditionFalse, strings.Join(lines, "\n"), nil
}

func (s *statusController) reconcile(ctx context.Context, k policyKey) error {
	obj, ok, err := s.informers[k.gvr].GetStore().GetByKey(k.storeKey())
	if err != nil {
		return err
	}
	if !ok {
		s.setValid(k, nil)
		return nil
	}
	u := obj.(*unstructured.Unstructured)
	status, msg, err := Validate(u)
	if err != nil {
		return err
	}
	valid := status == metav1.ConditionTrue
	s.setValid(k, &valid)

	var conds []metav1.Condition
	if raw, found, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); found {
		b, _ := json.Marshal(raw)
		_ = json.Unmarshal(b, &conds)
	}
	gen := u.GetGeneration()
	observed, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	reason := ReasonValid
	if !valid {
		reason = ReasonInvalid
	}
	prev := apimeta.FindStatusCondition(conds, ConditionValid)
	if prev != nil && prev.Status == status && prev.Reason == reason && prev.Message == msg && prev.ObservedGeneration == gen && observed == gen {
		return nil // up to date
	}
	verdictChanged := prev == nil || prev.Status != status || prev.Message != msg
	apimeta.SetStatusCondition(&conds, metav1.Condition{
		Type: ConditionValid, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
		LastTransitionTime: metav1.NewTime(s.o.cfg.Now()),
	})
	condsRaw := make([]any, len(conds))
	for i := range conds {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&conds[i])
		if err != nil {
			return fmt.Errorf("encode condition: %w", err)
		}
		condsRaw[i] = m
	}
	next := u.DeepCopy()
	if err := unstructured.SetNestedField(next.Object, map[string]any{"observedGeneration": gen, "conditions": condsRaw}, "status"); err != nil {
		return err
	}
	_, err = s.o.dyn.Resource(k.gvr).Namespace(k.namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("update status: %w", err)
	}
	if verdictChanged {
		if valid {
			s.recorder.Eventf(u, nil, corev1.EventTypeNormal, ReasonValid, "Validate", "%s", msg)
		} else {
			s.recorder.Eventf(u, nil, corev1.EventTypeWarning, ReasonInvalid, "Validate", "%s", msg)
		}
	}
	return nil
}

// setValid records a policy's verdict (nil: gone) and refreshes the gauge.
func (s *statusController) setValid(k policyKey, v *bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == nil {
		delete(s.valid, k)
	} else {
		s.valid[k] = *v
	}
	var nv, ni int
	for _, ok := range s.valid {
		if ok {
			nv++
		} else {
			ni++
		}
	}
	s.o.metrics.policies.WithLabelValues("true").Set(float64(nv))
	s.o.metrics.policies.WithLabelValues("false").Set(float64(ni))
}
