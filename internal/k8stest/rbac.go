package k8stest

// rbac.go applies the chart's RBAC templates and asks the apiserver what a
// user may do, so that role tests read the same way in every package.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ApplyTemplate applies a chart template whose only templating is
// {{ .Release.Namespace }}, set to ns.
func (c *Cluster) ApplyTemplate(t testing.TB, path, ns string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(data), "{{ .Release.Namespace }}", ns)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.MustKubectl(t, "apply", "-f", out)
}

// Allowed asks the apiserver (a SelfSubjectAccessReview) whether cfg's user
// may do attr.
func Allowed(t testing.TB, cfg *rest.Config, attr authzv1.ResourceAttributes) bool {
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
