package k8stest

import (
	"context"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestControlPlane starts the real pair, checks admin access, RBAC for a
// service account (denied, then allowed once bound), kubectl, and that an
// apiserver restart keeps etcd's data.
func TestControlPlane(t *testing.T) {
	c := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := c.Client(t)
	v, err := admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version %q, want v1.37.2 (the tools module's)", v.GitVersion)
	}

	saCfg := c.ServiceAccountConfig(t, "k8stest", "reader")
	sa, err := kubernetes.NewForConfig(saCfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("unbound service account listed namespaces: err=%v, want Forbidden", err)
	}
	c.MustKubectl(t, "create", "clusterrole", "ns-reader", "--verb=list", "--resource=namespaces")
	c.MustKubectl(t, "create", "clusterrolebinding", "ns-reader", "--clusterrole=ns-reader", "--serviceaccount=k8stest:reader")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err = sa.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("bound service account: %v", err)
	}

	c.MustKubectl(t, "create", "configmap", "-n", "k8stest", "keep", "--from-literal=k=v")
	c.StopAPIServer()
	if _, err := admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("apiserver still answers after StopAPIServer")
	}
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	out := c.MustKubectl(t, "get", "configmap", "-n", "k8stest", "keep", "-o", "jsonpath={.data.k}")
	if strings.TrimSpace(out) != "v" {
		t.Fatalf("configmap after apiserver restart: %q", out)
	}
}
