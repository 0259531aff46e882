package harness

// cluster.go is the order of things: Up (guards, PKI, images, control
// plane, nodes, kube-proxy, DNS, each waited for) and Status.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Up starts a cluster of c.Nodes nodes and returns once every node is
// Ready, kube-proxy programs Services on every node and kube-dns answers.
// On failure it leaves everything for Down (and the logs to read).
func (c Config) Up(ctx context.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := c.refuseIfPresent(ctx); err != nil {
		return err
	}
	start := time.Now()
	for _, d := range []string{c.StateDir, c.etcDir(), c.logDir(), c.pidDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create state dir: %w", err)
		}
	}
	if err := c.prepareHost(ctx); err != nil {
		return err
	}
	if err := c.writePKI(); err != nil {
		return err
	}
	// Pods with dnsPolicy Default (CoreDNS itself) get this: nothing
	// leaves the host for DNS.
	if err := os.WriteFile(filepath.Join(c.etcDir(), "pod-resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return err
	}
	images, err := c.buildImages()
	if err != nil {
		return err
	}
	c.Log.Info("images built", "count", len(images), "after", time.Since(start).Round(time.Millisecond))
	if err := c.startControlPlane(ctx); err != nil {
		return err
	}
	cs, err := c.Client()
	if err != nil {
		return err
	}
	if err := c.createNodes(ctx, cs); err != nil {
		return err
	}
	if err := c.linkCNIPlugins(); err != nil {
		return err
	}
	// Nodes start side by side: importing the images dominates.
	g, gctx := errgroup.WithContext(ctx)
	for n := 1; n <= c.Nodes; n++ {
		g.Go(func() error { return c.startNode(gctx, n, images) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := c.waitNodesReady(ctx, cs, 3*time.Minute); err != nil {
		return err
	}
	if !c.NoKubeProxy {
		for n := 1; n <= c.Nodes; n++ {
			if err := c.startKubeProxy(n); err != nil {
				return err
			}
		}
	}
	if err := c.applyCoreDNS(ctx); err != nil {
		return err
	}
	if !c.NoKubeProxy {
		if err := c.waitKubeProxy(ctx, 2*time.Minute); err != nil {
			return err
		}
	}
	// CoreDNS reaches the apiserver through the kubernetes Service: without
	// kube-proxy it is Ready only once something else serves ClusterIPs.
	if !c.NoKubeProxy {
		if err := c.waitDeployment(ctx, cs, "kube-system", "coredns", 3*time.Minute); err != nil {
			return err
		}
	}
	c.Log.Info("cluster up", "nodes", c.Nodes, "took", time.Since(start).Round(time.Millisecond),
		"kubeconfig", c.Kubeconfig())
	return nil
}

// Client is a clientset for the admin kubeconfig.
func (c Config) Client() (*kubernetes.Clientset, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig: %w", err)
	}
	rc.Timeout = 15 * time.Second
	return kubernetes.NewForConfig(rc)
}

// createNodes registers the Node objects with their podCIDR before the
// kubelets start, so node N always owns 10.244.(N-1).0/24 (a CNI such as
// moat-cni takes addresses from spec.podCIDR).
func (c Config) createNodes(ctx context.Context, cs kubernetes.Interface) error {
	for n := 1; n <= c.Nodes; n++ {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: NodeName(n), Labels: map[string]string{
				"kubernetes.io/hostname": NodeName(n), "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
			}},
			Spec: corev1.NodeSpec{PodCIDR: PodCIDR(n), PodCIDRs: []string{PodCIDR(n)}},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create node %s: %w", NodeName(n), err)
		}
	}
	return nil
}

func (c Config) waitNodesReady(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	start := time.Now()
	err := poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
		for n := 1; n <= c.Nodes; n++ {
			if _, ok := c.running(NodeName(n) + "-kubelet"); !ok {
				return true, fmt.Errorf("kubelet of %s exited; see %s", NodeName(n),
					filepath.Join(c.logDir(), NodeName(n)+"-kubelet.log"))
			}
		}
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		var notReady []string
		for _, nd := range nodes.Items {
			if NodeReady(&nd) {
				ready++
			} else {
				notReady = append(notReady, nd.Name)
			}
		}
		if ready < c.Nodes {
			return false, fmt.Errorf("not ready: %s", strings.Join(notReady, ","))
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for nodes ready: %w", err)
	}
	c.Log.Info("nodes ready", "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// NodeReady reports the node's Ready condition.
func NodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitKubeProxy waits until every node's kube-proxy has programmed the
// kube-dns ClusterIP into its nftables in the node netns.
func (c Config) waitKubeProxy(ctx context.Context, timeout time.Duration) error {
	for n := 1; n <= c.Nodes; n++ {
		name := NodeName(n) + "-kube-proxy"
		err := poll(ctx, timeout, 250*time.Millisecond, func() (bool, error) {
			if _, ok := c.running(name); !ok {
				return true, fmt.Errorf("%s exited; see %s", name, filepath.Join(c.logDir(), name+".log"))
			}
			out, err := run(ctx, "nsenter", "--net=/run/netns/"+NodeNetns(n), "nft", "list", "map", "ip", "kube-proxy", "service-ips")
			if err != nil {
				return false, err
			}
			if !strings.Contains(out, ClusterDNS+" ") {
				return false, errors.New("kube-dns ClusterIP not programmed yet")
			}
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("wait for %s: %w", name, err)
		}
	}
	return nil
}

func (c Config) waitDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, timeout time.Duration) error {
	start := time.Now()
	err := poll(ctx, timeout, 500*time.Millisecond, func() (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.ReadyReplicas < want {
			return false, fmt.Errorf("%d/%d ready", d.Status.ReadyReplicas, want)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for deployment %s/%s: %w", ns, name, err)
	}
	c.Log.Info("deployment ready", "name", ns+"/"+name, "after", time.Since(start).Round(time.Millisecond))
	return nil
}

// Status writes what runs: each daemon with its PID, and the nodes.
func (c Config) Status(ctx context.Context) error {
	if !exists(c.hostStateFile()) {
		fmt.Fprintf(c.Out, "no cluster (state dir %s)\n", c.StateDir)
		if left := c.leftovers(ctx); len(left) > 0 {
			fmt.Fprintf(c.Out, "leftovers: %s\n", strings.Join(left, "; "))
			return errors.New("leftovers of a cluster on the host; run moat-cluster down")
		}
		return nil
	}
	ents, _ := os.ReadDir(c.pidDir())
	down := 0
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".pid")
		if pid, ok := c.running(name); ok {
			fmt.Fprintf(c.Out, "%-28s running (pid %d)\n", name, pid)
		} else {
			fmt.Fprintf(c.Out, "%-28s NOT RUNNING (log %s)\n", name, filepath.Join(c.logDir(), name+".log"))
			down++
		}
	}
	fmt.Fprintf(c.Out, "kubeconfig: %s\n", c.Kubeconfig())
	out, err := c.kubectl(ctx, "get", "nodes", "-o", "wide")
	fmt.Fprint(c.Out, out)
	if err != nil {
		return err
	}
	if down > 0 {
		return fmt.Errorf("%d daemons not running", down)
	}
	return nil
}
