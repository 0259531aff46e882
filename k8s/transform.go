package k8s

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// transform.go owns the informers' transforms: each cached object keeps
// only what the Source reads, so that the caches of a large cluster stay
// small (no managedFields, no container specs, no status beyond the
// addresses). Anything else passes through unchanged (tombstones).

// slimMeta keeps name, namespace, UID, resourceVersion, labels and the
// deletion timestamp.
func slimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		Labels:            m.Labels,
		DeletionTimestamp: m.DeletionTimestamp,
	}
}

func transformPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: slimMeta(&p.ObjectMeta),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if v, ok := p.Annotations[AnnotationInterface]; ok {
		out.Annotations = map[string]string{AnnotationInterface: v}
	}
	return out, nil
}

func transformNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: slimMeta(&n.ObjectMeta)}, nil
}

func transformNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: slimMeta(&n.ObjectMeta)}
	out.Labels = nil
	out.Spec.PodCIDR, out.Spec.PodCIDRs = n.Spec.PodCIDR, n.Spec.PodCIDRs
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out, nil
}

func transformEndpointSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: slimMeta(&s.ObjectMeta), AddressType: s.AddressType}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{Addresses: e.Addresses})
	}
	return out, nil
}

func transformConfigMap(obj any) (any, error) {
	c, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return obj, nil
	}
	return &corev1.ConfigMap{ObjectMeta: slimMeta(&c.ObjectMeta), Data: c.Data}, nil
}

// transformPolicy keeps a policy object's apiVersion, kind, identifying
// metadata and spec/specs: its status (written by the operator), its
// annotations (kubectl's last-applied copy doubles the size) and its
// managedFields are never read.
func transformPolicy(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	out := map[string]any{}
	for _, k := range []string{"apiVersion", "kind", "spec", "specs"} {
		if v, ok := u.Object[k]; ok {
			out[k] = v
		}
	}
	if md, ok := u.Object["metadata"].(map[string]any); ok {
		m := map[string]any{}
		for _, k := range []string{"name", "namespace", "uid", "resourceVersion", "generation", "labels"} {
			if v, ok := md[k]; ok {
				m[k] = v
			}
		}
		out["metadata"] = m
	}
	return &unstructured.Unstructured{Object: out}, nil
}

// transformCRD keeps a CustomResourceDefinition's name, resourceVersion,
// whether it is Established and its served versions. Like every transform
// here it is idempotent: client-go may run it on an object it already
// transformed.
func transformCRD(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	if _, done := u.Object["established"]; done {
		return u, nil
	}
	established := false
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		cm, _ := c.(map[string]any)
		if cm["type"] == "Established" && cm["status"] == "True" {
			established = true
		}
	}
	var served []any
	vers, _, _ := unstructured.NestedSlice(u.Object, "spec", "versions")
	for _, v := range vers {
		vm, _ := v.(map[string]any)
		if vm["served"] == true {
			served = append(served, vm["name"])
		}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion":  u.GetAPIVersion(),
		"kind":        u.GetKind(),
		"metadata":    map[string]any{"name": u.GetName(), "resourceVersion": u.GetResourceVersion()},
		"established": established,
		"served":      served,
	}}, nil
}
