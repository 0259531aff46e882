package k8s

// snapshot.go owns the one-shot read of the cluster for the CLI (`moat
// policy trace|validate --kubeconfig`): one List per resource, fed through
// the Source's own transforms, conversion and Drain, so that the CLI sees
// exactly what an agent on the same node would compile. Nothing is watched
// and nothing is written.

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// SnapshotResult is what Snapshot read and applied.
type SnapshotResult struct {
	// Report is the Drain's report (Errors: the Sink's errors).
	Report Report
	// PolicyErrors are the policy objects that do not parse or validate,
	// sorted by kind, namespace and name.
	PolicyErrors []*PolicyError
	// Policies is the number of policy objects read (valid or not), and
	// Kinds the policy resources that were listed ("networkpolicies.moat.io").
	Policies int
	Kinds    []string
}

// Snapshot reads the cluster once (one List each: namespaces, nodes, pods,
// the EndpointSlices of default/kubernetes, CustomResourceDefinitions, and
// every policy kind whose CRD is established) and applies it to sink
// through the Source's conversion, as an agent named cfg.NodeName would
// after its first sync. The agent ConfigMap is not read.
func Snapshot(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, cfg Config, sink Sink) (*SnapshotResult, error) {
	cfg.ConfigMapNamespace, cfg.ConfigMapName = "", ""
	s, err := New(cs, dyn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	add := func(inf cache.SharedIndexInformer, tf cache.TransformFunc, kind objKind, pol int, obj any) error {
		obj, err := tf(obj)
		if err != nil {
			return err
		}
		if err := inf.GetStore().Add(obj); err != nil {
			return err
		}
		s.changed(kind, pol, obj)
		return nil
	}

	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		if err := add(s.namespaces, transformNamespace, kindNamespace, 0, &nss.Items[i]); err != nil {
			return nil, err
		}
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodes.Items {
		if err := add(s.nodes, transformNode, kindNode, 0, &nodes.Items[i]); err != nil {
			return nil, err
		}
	}
	pods, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		if err := add(s.pods, transformPod, kindPod, 0, &pods.Items[i]); err != nil {
			return nil, err
		}
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{discoveryv1.LabelServiceName: "kubernetes"}.String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list endpointslices of default/kubernetes: %w", err)
	}
	for i := range slices.Items {
		if err := add(s.slices, transformEndpointSlice, kindSlice, 0, &slices.Items[i]); err != nil {
			return nil, err
		}
	}

	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crds, err := dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list customresourcedefinitions: %w", err)
	}
	for i := range crds.Items {
		obj, err := transformCRD(&crds.Items[i])
		if err != nil {
			return nil, err
		}
		if err := s.crds.GetStore().Add(obj); err != nil {
			return nil, err
		}
		s.crdChanged(obj) // starts (without running) the informer of a policy kind
	}

	res := &SnapshotResult{}
	s.mu.Lock()
	for i, k := range policyKinds {
		if k.crd == "" && s.policies[i] == nil { // built in: always served
			if err := s.startPolicyWatchLocked(i); err != nil {
				s.mu.Unlock()
				return nil, err
			}
		}
	}
	watches := make(map[int]*policyWatch, len(s.policies))
	for i, w := range s.policies {
		watches[i] = w
	}
	s.mu.Unlock()
	for i, pk := range policyKinds {
		w := watches[i]
		if w == nil {
			continue
		}
		list, err := dyn.Resource(pk.gvr).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", pk.gvr.GroupResource(), err)
		}
		res.Kinds = append(res.Kinds, pk.gvr.GroupResource().String())
		for j := range list.Items {
			if err := add(w.informer, transformPolicy, kindPolicy, i, &list.Items[j]); err != nil {
				return nil, err
			}
			res.Policies++
		}
	}
	res.Report = s.Drain(sink)
	res.PolicyErrors = s.PolicyErrors()
	return res, nil
}

// PodNode returns the node a pod is scheduled to ("" when not scheduled).
// The CLI uses it to pick the node whose view it compiles.
func PodNode(ctx context.Context, cs kubernetes.Interface, namespace, name string) (string, error) {
	p, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return p.Spec.NodeName, nil
}
