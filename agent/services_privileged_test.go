package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/internal/metricslint"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedKubeServicesFeed: in Kubernetes mode the agent's Service
// translation takes its table from the API (a Service and its
// EndpointSlice become a frontend with the ready backends, a readiness
// change follows), and its scope from the endpoints reconcile attached.
func TestPrivilegedKubeServicesFeed(t *testing.T) {
	testutil.Privileged(t)
	cl := k8stest.Start(t)
	dir := t.TempDir()
	var r [4]byte
	_, _ = rand.Read(r[:])
	root := "/sys/fs/bpf/moat-unit-svc-" + hex.EncodeToString(r[:])
	t.Cleanup(func() {
		if err := os.RemoveAll(root); err != nil {
			t.Errorf("remove %s: %v", root, err)
		}
	})
	a, err := New(Config{
		Kubeconfig: cl.Kubeconfig, NodeName: "n1", ServiceTranslation: true,
		StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), Proxy: ProxyExternal,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	run, closeSvc, err := a.startServices(root)
	testutil.Require(t, "service translation", err)
	t.Cleanup(func() {
		closeSvc()
		if err := datapath.CleanupSockAddr(datapath.SockAddrConfig{PinRoot: root}); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cs := cl.Client(t)
	svc, err := cs.CoreV1().Services("default").Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fe := datapath.Frontend{Addr: netip.MustParseAddr(svc.Spec.ClusterIP), Port: 80, Proto: policy.ProtoTCP}
	ready := func(b bool) *bool { return &b }
	name, port, proto := "http", int32(8080), corev1.ProtocolTCP
	sl, err := cs.DiscoveryV1().EndpointSlices("default").Create(t.Context(), &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.1.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ready(true)}},
			{Addresses: []string{"10.0.1.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ready(true)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitInstalled := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := a.svc.sa.InstalledServices()
			if err != nil {
				t.Fatal(err)
			}
			var bes []string
			for _, b := range got[fe] {
				bes = append(bes, b.String())
			}
			slices.Sort(bes)
			if _, ok := got[fe]; ok && slices.Equal(bes, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: installed %v, want %s -> %v", what, got, fe, want)
			}
			time.Sleep(20 * time.Millisecond) // polling the maps, with a deadline
		}
	}
	waitInstalled("two ready endpoints", "10.0.1.1:8080", "10.0.1.2:8080")
	sl.Endpoints[0].Conditions.Ready = ready(false)
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(t.Context(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitInstalled("one not ready", "10.0.1.2:8080")

	// Scope: the netns of the endpoints reconcile attached.
	pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.41.1")})
	cookie, err := datapath.NetnsCookie(pod.NsPath)
	if err != nil {
		t.Fatal(err)
	}
	k := datapath.EndpointKey{Namespace: "default", Name: "p"}
	a.noteEndpointNetns(k, pod.NsPath)
	if err := a.syncServiceScope(map[datapath.EndpointKey]policy.Endpoint{k: {}}); err != nil {
		t.Fatal(err)
	}
	if got := a.svc.sa.Scope(); !slices.Equal(got, []uint64{cookie}) {
		t.Errorf("scope %v, want the endpoint's netns %d", got, cookie)
	}
	if err := a.syncServiceScope(map[datapath.EndpointKey]policy.Endpoint{}); err != nil {
		t.Fatal(err)
	}
	if got := a.svc.sa.Scope(); len(got) != 0 {
		t.Errorf("scope %v after the endpoint went, want empty", got)
	}

	// The translation metrics pass promlint and are there.
	problems, names, err := metricslint.Lint(a.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{"moat_service_translation_calls_total", "moat_service_frontends", "moat_service_scope_netns"} {
		if !slices.Contains(names, want) {
			t.Errorf("metric %s not exported (have %v)", want, names)
		}
	}
}
