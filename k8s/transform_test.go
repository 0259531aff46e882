package k8s

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestTransformsKeepOnlyWhatIsRead: the cached objects lose managedFields,
// annotations other than moat.io/interface, container specs and status
// beyond addresses; applying a transform twice changes nothing (client-go
// may do so).
func TestTransformsKeepOnlyWhatIsRead(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", ResourceVersion: "7", Labels: map[string]string{"app": "web"},
			Annotations:   map[string]string{AnnotationInterface: "lxc1", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		Status: corev1.PodStatus{PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}, Conditions: []corev1.PodCondition{{Type: "Ready"}}},
	}
	got, _ := transformPod(pod)
	p := got.(*corev1.Pod)
	if p.ManagedFields != nil || len(p.Spec.Containers) != 0 || p.Status.Conditions != nil {
		t.Errorf("transformed pod keeps what is never read: %+v", p)
	}
	if p.Annotations[AnnotationInterface] != "lxc1" || len(p.Annotations) != 1 || p.Spec.NodeName != "n1" || p.Status.PodIP != "10.0.0.1" || p.Labels["app"] != "web" || p.ResourceVersion != "7" {
		t.Errorf("transformed pod lost what is read: %+v", p)
	}
	again, _ := transformPod(p)
	if !reflect.DeepEqual(again, p) {
		t.Errorf("transformPod is not idempotent")
	}

	pol := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "moat.io/v1alpha1", "kind": "NetworkPolicy",
		"metadata": map[string]any{"name": "a", "namespace": "b", "resourceVersion": "3", "managedFields": []any{map[string]any{}},
			"annotations": map[string]any{"x": "y"}},
		"spec":   map[string]any{"endpointSelector": map[string]any{}},
		"status": map[string]any{"conditions": []any{}},
	}}
	gotU, _ := transformPolicy(pol)
	u := gotU.(*unstructured.Unstructured)
	if _, ok := u.Object["status"]; ok {
		t.Errorf("policy status kept")
	}
	md := u.Object["metadata"].(map[string]any)
	if _, ok := md["managedFields"]; ok || md["annotations"] != nil || md["name"] != "a" || u.Object["spec"] == nil {
		t.Errorf("transformed policy metadata %v, spec %v", md, u.Object["spec"])
	}
	againU, _ := transformPolicy(u)
	if !reflect.DeepEqual(againU, u) {
		t.Errorf("transformPolicy is not idempotent")
	}

	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "networkpolicies.moat.io"},
		"spec":     map[string]any{"versions": []any{map[string]any{"name": "v1alpha1", "served": true}, map[string]any{"name": "v1", "served": false}}},
		"status":   map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True"}}},
	}}
	c1, _ := transformCRD(crd)
	c2, _ := transformCRD(c1)
	cu := c2.(*unstructured.Unstructured)
	if cu.Object["established"] != true || !reflect.DeepEqual(cu.Object["served"], []any{"v1alpha1"}) {
		t.Errorf("CRD transformed twice: %v", cu.Object)
	}
}

func TestLabelFilter(t *testing.T) {
	for _, tc := range []struct {
		exclude []string
		in      map[string]string
		want    map[string]string
	}{
		{nil, map[string]string{"app": "web", "pod-template-hash": "abc", "controller-revision-hash": "1"}, map[string]string{"app": "web"}},
		{[]string{"team*"}, map[string]string{"app": "web", "team-a": "x", "pod-template-hash": "abc"}, map[string]string{"app": "web", "pod-template-hash": "abc"}},
		{[]string{}, map[string]string{"app": "", "pod-template-hash": "abc"}, map[string]string{"app": "", "pod-template-hash": "abc"}},
		{nil, map[string]string{"pod-template-hash": "abc"}, nil},
	} {
		if got := newLabelFilter(tc.exclude).apply(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("filter %v on %v = %v, want %v", tc.exclude, tc.in, got, tc.want)
		}
	}
}
