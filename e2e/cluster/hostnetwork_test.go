package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// TestClusterHostNetworkDaemonSet runs the shape of a node agent: a
// privileged hostNetwork DaemonSet with bpffs mounted Bidirectional (which
// needs a shared bpffs on the node). Each pod must run in its own node's
// network namespace: it sees its node's address and no other node's.
func TestClusterHostNetworkDaemonSet(t *testing.T) {
	t.Parallel() // own namespace; the wait for its deletion dominates
	e := newEnv(t)
	ns := e.namespace(t)
	labels := map[string]string{"app": "node-agent"}
	bidir := corev1.MountPropagationBidirectional
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: ns},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					HostNetwork:                   true,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "agent",
						Image:           AgnhostImage,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args:            []string{"pause"},
						SecurityContext: &corev1.SecurityContext{Privileged: ptr.To(true)},
						VolumeMounts:    []corev1.VolumeMount{{Name: "bpffs", MountPath: "/sys/fs/bpf", MountPropagation: &bidir}},
					}},
					Volumes: []corev1.Volume{{Name: "bpffs", VolumeSource: corev1.VolumeSource{
						HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf", Type: ptr.To(corev1.HostPathDirectory)},
					}}},
				},
			},
		},
	}
	if _, err := e.cs.AppsV1().DaemonSets(ns).Create(e.ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nodes, err := e.cs.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodeIP := map[string]string{}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				nodeIP[n.Name] = a.Address
			}
		}
	}
	err = waitFor(e.ctx, 3*time.Minute, func() (bool, error) {
		d, err := e.cs.AppsV1().DaemonSets(ns).Get(e.ctx, "node-agent", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if d.Status.DesiredNumberScheduled != int32(len(nodes.Items)) || d.Status.NumberReady != d.Status.DesiredNumberScheduled {
			return false, fmt.Errorf("%d/%d ready (of %d nodes)", d.Status.NumberReady, d.Status.DesiredNumberScheduled, len(nodes.Items))
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("wait for the DaemonSet: %v", err)
	}
	pods, err := e.cs.CoreV1().Pods(ns).List(e.ctx, metav1.ListOptions{LabelSelector: "app=node-agent"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		out, err := e.exec(e.ctx, &p, "ip", "-o", "-4", "addr", "show")
		if err != nil {
			t.Fatal(err)
		}
		for node, ip := range nodeIP {
			has := strings.Contains(out, " "+ip+"/")
			if node == p.Spec.NodeName && !has {
				t.Errorf("pod %s on %s: its node's address %s missing:\n%s", p.Name, node, ip, out)
			}
			if node != p.Spec.NodeName && has {
				t.Errorf("pod %s on %s sees %s's address %s: not in its own node's netns:\n%s", p.Name, p.Spec.NodeName, node, ip, out)
			}
		}
		if _, err := e.exec(e.ctx, &p, "ls", "/sys/fs/bpf"); err != nil {
			t.Errorf("bpffs in %s: %v", p.Name, err)
		}
	}
}
