package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/remotecommand"
)

// AgnhostImage is the upstream e2e image's tag; the local cluster has it
// built locally, kind pulls it.
const AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"

type env struct {
	cs  kubernetes.Interface
	rc  *rest.Config
	ctx context.Context
}

// newEnv connects to the cluster KUBECONFIG names, or skips (fails with
// MOAT_CLUSTER_TESTS=1).
func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Getenv("KUBECONFIG") == "" {
		if os.Getenv("MOAT_CLUSTER_TESTS") == "1" {
			t.Fatal("MOAT_CLUSTER_TESTS=1 but KUBECONFIG is not set; start a cluster with `make cluster-up` and run `make e2e-cluster`")
		}
		t.Skip("needs a cluster: set KUBECONFIG (make cluster-up; make e2e-cluster)")
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		t.Fatalf("load KUBECONFIG %s: %v", os.Getenv("KUBECONFIG"), err)
	}
	rc.Timeout = 30 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{cs: cs, rc: rc, ctx: t.Context()}
}

// namespace creates a fresh namespace and deletes it (waiting until it is
// gone) when the test ends.
func (e *env) namespace(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "moat-e2e-" + hex.EncodeToString(b)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"moat.io/e2e": "true"}}}
	if _, err := e.cs.CoreV1().Namespaces().Create(e.ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := e.cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
			return
		}
		err := waitFor(ctx, 2*time.Minute, func() (bool, error) {
			_, err := e.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			t.Errorf("namespace %s not gone: %v", name, err)
		}
	})
	return name
}

// waitFor polls f until it is done, fails or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		done, err := f()
		if done {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// exec runs argv in a pod's first container and returns stdout; the error
// carries stderr. It is what `kubectl exec` does.
func (e *env) exec(ctx context.Context, pod *corev1.Pod, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := e.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).
		SubResource("exec").VersionedParams(&corev1.PodExecOptions{
		Container: pod.Spec.Containers[0].Name, Command: argv, Stdout: true, Stderr: true,
	}, scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(e.rc, "POST", req.URL())
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		return out.String(), fmt.Errorf("exec %q in %s/%s: %w: %s", strings.Join(argv, " "), pod.Namespace, pod.Name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
