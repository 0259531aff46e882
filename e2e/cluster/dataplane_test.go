package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestClusterNodesReady(t *testing.T) {
	e := newEnv(t)
	nodes, err := e.cs.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := 0
	for _, n := range nodes.Items {
		ok := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		if !ok {
			t.Errorf("node %s is not Ready", n.Name)
		} else {
			ready++
		}
	}
	if ready < 2 {
		t.Fatalf("%d Ready nodes, the suite needs at least 2", ready)
	}
}

// echoApp is an agnhost netexec Deployment with one pod per node (required
// anti-affinity), and a ClusterIP Service in front: TCP 80 -> 8080 (HTTP),
// UDP 81 -> 8081 (answers "hostname" with the pod's name).
func echoApp(ns string, replicas int32) (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": "echo"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							TopologyKey:   "kubernetes.io/hostname",
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
						}},
					}},
					Containers: []corev1.Container{{
						Name:            "agnhost",
						Image:           AgnhostImage,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            []string{"netexec", "--http-port=8080", "--udp-port=8081"},
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
							{Name: "udp", ContainerPort: 8081, Protocol: corev1.ProtocolUDP},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: 81, TargetPort: intstr.FromInt32(8081), Protocol: corev1.ProtocolUDP},
			},
		},
	}
	return d, s
}

// readyPods waits until the Deployment has want Ready pods and returns them.
func (e *env) readyPods(t *testing.T, ns, app string, want int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	err := waitFor(e.ctx, 3*time.Minute, func() (bool, error) {
		l, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					pods = append(pods, p)
				}
			}
		}
		if len(pods) != want {
			return false, fmt.Errorf("%d/%d pods ready", len(pods), want)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("wait for %s pods: %v", app, err)
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Spec.NodeName, b.Spec.NodeName) })
	return pods
}

// httpGet asks an HTTP server for path through busybox nc inside pod (the
// busybox wget of Debian's static build crashes) and returns the body.
func (e *env) httpGet(ctx context.Context, pod *corev1.Pod, hostPort, path string) (string, error) {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return "", err
	}
	out, err := e.exec(ctx, pod, "sh", "-c",
		fmt.Sprintf("printf 'GET %s HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' | nc -w 3 %s %s", path, host, host, port))
	if err != nil {
		return "", err
	}
	head, body, ok := strings.Cut(out, "\r\n\r\n")
	if !ok || !strings.HasPrefix(head, "HTTP/1.") || !strings.Contains(strings.SplitN(head, "\r\n", 2)[0], " 200 ") {
		return "", fmt.Errorf("GET http://%s%s from %s: unexpected response %q", hostPort, path, pod.Name, out)
	}
	return body, nil
}

func TestClusterDataPlane(t *testing.T) {
	t.Parallel() // own namespace; the wait for its deletion dominates
	e := newEnv(t)
	nodes, err := e.cs.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes.Items) < 2 {
		t.Fatalf("%d nodes; the data-plane tests need 2", len(nodes.Items))
	}
	ns := e.namespace(t)
	d, svc := echoApp(ns, 2)
	if _, err := e.cs.AppsV1().Deployments(ns).Create(e.ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err = e.cs.CoreV1().Services(ns).Create(e.ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pods := e.readyPods(t, ns, "echo", 2)

	t.Run("spread over two nodes", func(t *testing.T) {
		if pods[0].Spec.NodeName == pods[1].Spec.NodeName {
			t.Fatalf("both pods on %s", pods[0].Spec.NodeName)
		}
		for _, p := range pods {
			if p.Status.PodIP == "" || p.Status.PodIP == p.Status.HostIP {
				t.Errorf("pod %s: pod IP %q, host IP %q: want a pod network address", p.Name, p.Status.PodIP, p.Status.HostIP)
			}
		}
	})

	t.Run("exec and logs", func(t *testing.T) {
		for _, p := range pods {
			out, err := e.exec(e.ctx, &p, "hostname")
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != p.Name {
				t.Errorf("exec hostname in %s: %q", p.Name, out)
			}
			logs, err := e.cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(e.ctx)
			if err != nil {
				t.Fatalf("logs of %s: %v", p.Name, err)
			}
			if !strings.Contains(string(logs), "Started HTTP server on port 8080") {
				t.Errorf("logs of %s lack the netexec start line:\n%s", p.Name, logs)
			}
		}
	})

	t.Run("kubectl exec and logs", func(t *testing.T) {
		// The kubectl binary too, where the suite knows one: make
		// e2e-cluster passes MOAT_K8S_BINS (/usr/bin/kubectl may be a
		// dispatcher of another version).
		bins := os.Getenv("MOAT_K8S_BINS")
		if bins == "" {
			if os.Getenv("MOAT_CLUSTER_TESTS") == "1" {
				t.Fatal("MOAT_CLUSTER_TESTS=1 needs MOAT_K8S_BINS (scripts/k8s-bins.sh) for kubectl")
			}
			t.Skip("set MOAT_K8S_BINS to check kubectl itself")
		}
		kubectl := filepath.Join(bins, "kubectl")
		for _, p := range pods {
			out, err := exec.CommandContext(e.ctx, kubectl, "-n", ns, "exec", p.Name, "--", "hostname").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != p.Name {
				t.Errorf("kubectl exec %s -- hostname: %v: %q", p.Name, err, out)
			}
			out, err = exec.CommandContext(e.ctx, kubectl, "-n", ns, "logs", p.Name).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Started HTTP server on port 8080") {
				t.Errorf("kubectl logs %s: %v: %q", p.Name, err, out)
			}
		}
	})

	t.Run("pod to pod across nodes", func(t *testing.T) {
		for _, from := range pods {
			for _, to := range pods {
				if from.Name == to.Name {
					continue
				}
				tcp := net.JoinHostPort(to.Status.PodIP, "8080")
				body, err := e.httpGet(e.ctx, &from, tcp, "/hostname")
				if err != nil {
					t.Errorf("TCP %s (%s) -> %s (%s): %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, err)
				} else if strings.TrimSpace(body) != to.Name {
					t.Errorf("TCP %s -> %s answered %q", from.Name, tcp, body)
				}
				udp := net.JoinHostPort(to.Status.PodIP, "8081")
				if _, err := e.exec(e.ctx, &from, "/agnhost", "connect", "--protocol=udp", "--timeout=5s", udp); err != nil {
					t.Errorf("UDP %s (%s) -> %s (%s): %v", from.Name, from.Spec.NodeName, to.Name, to.Spec.NodeName, err)
				}
			}
		}
	})

	t.Run("ClusterIP service from each node", func(t *testing.T) {
		vip := net.JoinHostPort(svc.Spec.ClusterIP, "80")
		for _, from := range pods {
			// kube-proxy balances at random: ask until both backends (one
			// per node) have answered, so the Service is shown to reach
			// the other node too.
			seen := map[string]bool{}
			for i := 0; i < 40 && len(seen) < len(pods); i++ {
				body, err := e.httpGet(e.ctx, &from, vip, "/hostname")
				if err != nil {
					t.Fatalf("from %s (%s): %v", from.Name, from.Spec.NodeName, err)
				}
				seen[strings.TrimSpace(body)] = true
			}
			for _, p := range pods {
				if !seen[p.Name] {
					t.Errorf("from %s: Service %s never reached %s on %s (saw %v)", from.Name, vip, p.Name, p.Spec.NodeName, seen)
				}
			}
			udp := net.JoinHostPort(svc.Spec.ClusterIP, "81")
			if _, err := e.exec(e.ctx, &from, "/agnhost", "connect", "--protocol=udp", "--timeout=5s", udp); err != nil {
				t.Errorf("UDP Service from %s: %v", from.Name, err)
			}
		}
	})

	t.Run("service name through cluster DNS", func(t *testing.T) {
		fqdn := "echo." + ns + ".svc.cluster.local"
		for _, from := range pods {
			out, err := e.exec(e.ctx, &from, "nslookup", fqdn)
			if err != nil {
				t.Fatalf("nslookup %s in %s: %v\n%s", fqdn, from.Name, err, out)
			}
			if !strings.Contains(out, svc.Spec.ClusterIP) {
				t.Errorf("nslookup %s in %s: no %s in\n%s", fqdn, from.Name, svc.Spec.ClusterIP, out)
			}
			// The short name through the pod's search path, resolved by
			// Go's resolver in agnhost, then a TCP connection to it.
			if _, err := e.exec(e.ctx, &from, "/agnhost", "connect", "--timeout=5s", "echo:80"); err != nil {
				t.Errorf("connect echo:80 by short name from %s: %v", from.Name, err)
			}
		}
	})
}
