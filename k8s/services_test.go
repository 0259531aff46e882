package k8s

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/moatnet/moat/internal/k8stest"
	"github.com/moatnet/moat/policy"
)

func ptr[T any](v T) *T { return &v }

func svcObj(ns, name string, ips []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	s.Spec.ClusterIPs = ips
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	s.Spec.Ports = ports
	return s
}

func sliceObj(ns, svc, name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family, Ports: ports, Endpoints: eps,
	}
}

func epObj(ready *bool, node string, addrs ...string) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: addrs, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	if node != "" {
		e.NodeName = ptr(node)
	}
	return e
}

func epPort(name string, proto corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: ptr(proto), Port: ptr(port)}
}

// render prints a table as "frontend proto -> backends" lines.
func render(t []ServiceEntry) []string {
	var out []string
	for _, e := range t {
		var bs []string
		for _, b := range e.Backends {
			bs = append(bs, b.String())
		}
		proto := "tcp"
		if e.Frontend.Proto == policy.ProtoUDP {
			proto = "udp"
		}
		out = append(out, fmt.Sprintf("%s/%s %s/%s:%s -> %s", netip.AddrPortFrom(e.Frontend.Addr, e.Frontend.Port), proto,
			e.Namespace, e.Name, e.PortName, strings.Join(bs, ",")))
	}
	return out
}

func TestServiceTable(t *testing.T) {
	yes, no := ptr(true), ptr(false)
	web := []corev1.ServicePort{
		{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt(8080)},
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
	}
	webPorts := []discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080), epPort("dns", corev1.ProtocolUDP, 5353)}
	cases := []struct {
		name   string
		svcs   []*corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   []string
	}{
		{
			name: "ready endpoints only, ports by name and protocol",
			svcs: []*corev1.Service{svcObj("a", "web", []string{"10.96.0.10"}, web...)},
			slices: []*discoveryv1.EndpointSlice{
				sliceObj("a", "web", "web-1", discoveryv1.AddressTypeIPv4, webPorts,
					epObj(yes, "n1", "10.0.1.1"), epObj(nil, "n2", "10.0.2.1"), epObj(no, "n1", "10.0.1.2")),
			},
			want: []string{
				"10.96.0.10:53/udp a/web:dns -> 10.0.1.1:5353,10.0.2.1:5353",
				"10.96.0.10:80/tcp a/web:http -> 10.0.1.1:8080,10.0.2.1:8080",
			},
		},
		{
			name: "no endpoints: frontend without backends",
			svcs: []*corev1.Service{svcObj("a", "web", []string{"10.96.0.10"}, web[0])},
			want: []string{"10.96.0.10:80/tcp a/web:http -> "},
		},
		{
			name: "dual stack: each family its slices",
			svcs: []*corev1.Service{svcObj("a", "web", []string{"10.96.0.10", "fd00:96::10"}, web[0])},
			slices: []*discoveryv1.EndpointSlice{
				sliceObj("a", "web", "v4", discoveryv1.AddressTypeIPv4, webPorts, epObj(yes, "", "10.0.1.1")),
				sliceObj("a", "web", "v6", discoveryv1.AddressTypeIPv6, webPorts, epObj(yes, "", "fd00::1")),
			},
			want: []string{
				"10.96.0.10:80/tcp a/web:http -> 10.0.1.1:8080",
				"[fd00:96::10]:80/tcp a/web:http -> [fd00::1]:8080",
			},
		},
		{
			name: "several slices merge, duplicates once",
			svcs: []*corev1.Service{svcObj("a", "web", []string{"10.96.0.10"}, web[0])},
			slices: []*discoveryv1.EndpointSlice{
				sliceObj("a", "web", "s1", discoveryv1.AddressTypeIPv4, webPorts, epObj(yes, "", "10.0.1.2")),
				sliceObj("a", "web", "s2", discoveryv1.AddressTypeIPv4, webPorts, epObj(yes, "", "10.0.1.1", "10.0.1.2")),
				sliceObj("b", "web", "other-ns", discoveryv1.AddressTypeIPv4, webPorts, epObj(yes, "", "10.9.9.9")),
			},
			want: []string{"10.96.0.10:80/tcp a/web:http -> 10.0.1.1:8080,10.0.1.2:8080"},
		},
		{
			name: "headless, ExternalName, SCTP and another proxy's Service have no frontend",
			svcs: []*corev1.Service{
				svcObj("a", "headless", []string{"None"}, web[0]),
				func() *corev1.Service {
					s := svcObj("a", "ext", nil, web[0])
					s.Spec.Type = corev1.ServiceTypeExternalName
					return s
				}(),
				svcObj("a", "sctp", []string{"10.96.0.12"}, corev1.ServicePort{Name: "s", Protocol: corev1.ProtocolSCTP, Port: 9}),
				func() *corev1.Service {
					s := svcObj("a", "other", []string{"10.96.0.13"}, web[0])
					s.Labels = map[string]string{LabelServiceProxyName: "someone"}
					return s
				}(),
			},
		},
		{
			name: "internalTrafficPolicy Local keeps this node's endpoints",
			svcs: []*corev1.Service{func() *corev1.Service {
				s := svcObj("a", "web", []string{"10.96.0.10"}, web[0])
				s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
				s.Spec.Type = corev1.ServiceTypeNodePort
				return s
			}()},
			slices: []*discoveryv1.EndpointSlice{
				sliceObj("a", "web", "s1", discoveryv1.AddressTypeIPv4, webPorts, epObj(yes, "n1", "10.0.1.1"), epObj(yes, "n2", "10.0.2.1")),
			},
			want: []string{"10.96.0.10:80/tcp a/web:http -> 10.0.1.1:8080"},
		},
		{
			name: "unnamed single port; a slice without the port gives nothing",
			svcs: []*corev1.Service{svcObj("a", "one", []string{"10.96.0.20"}, corev1.ServicePort{Port: 443})},
			slices: []*discoveryv1.EndpointSlice{
				sliceObj("a", "one", "s1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{{Port: ptr(int32(8443))}}, epObj(yes, "", "10.0.1.1")),
				sliceObj("a", "one", "s2", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{epPort("other", corev1.ProtocolTCP, 1)}, epObj(yes, "", "10.0.1.2")),
			},
			want: []string{"10.96.0.20:443/tcp a/one: -> 10.0.1.1:8443"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := render(ServiceTable(c.svcs, c.slices, "n1"))
			if !slices.Equal(got, c.want) {
				t.Fatalf("table:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestServiceTransformsKeepWhatTableReads(t *testing.T) {
	s := svcObj("a", "web", []string{"10.96.0.10"}, corev1.ServicePort{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP})
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	s.Spec.Selector = map[string]string{"app": "web"}
	sl := sliceObj("a", "web", "s", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080)},
		epObj(ptr(true), "n1", "10.0.1.1"), epObj(ptr(false), "n1", "10.0.1.2"))
	ts, _ := transformService(s)
	tsl, _ := transformServiceSlice(sl)
	if got, want := render(ServiceTable([]*corev1.Service{ts.(*corev1.Service)}, []*discoveryv1.EndpointSlice{tsl.(*discoveryv1.EndpointSlice)}, "n1")),
		render(ServiceTable([]*corev1.Service{s}, []*discoveryv1.EndpointSlice{sl}, "n1")); !slices.Equal(got, want) {
		t.Fatalf("after transforms %v, before %v", got, want)
	}
	if ts.(*corev1.Service).ManagedFields != nil || ts.(*corev1.Service).Spec.Selector != nil {
		t.Error("transform kept fields the table does not read")
	}
}

// TestServiceWatch runs the watch against a real apiserver: a Service and
// its EndpointSlice appear in the table, and a readiness change and a
// deletion follow.
func TestServiceWatch(t *testing.T) {
	cl := k8stest.Start(t)
	cs := cl.Client(t)
	w, err := NewServiceWatch(cs, "n1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if !w.WaitForCacheSync(ctx) {
		t.Fatal("service watch never synced")
	}
	// The apiserver's own Service (default/kubernetes) is there; wait for
	// tables by content.
	waitTable := func(what string, ok func([]string) bool) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			got := render(w.Table())
			if ok(got) {
				return
			}
			select {
			case <-w.Changed():
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("%s: table stayed %v", what, got)
			}
		}
	}
	svc, err := cs.CoreV1().Services("default").Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := svc.Spec.ClusterIP
	fe := vip + ":80/tcp default/web:http -> "
	waitTable("service without endpoints", func(l []string) bool { return slices.Contains(l, fe) })
	sl, err := cs.DiscoveryV1().EndpointSlices("default").Create(t.Context(),
		sliceObj("default", "web", "web-1", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{epPort("http", corev1.ProtocolTCP, 8080)},
			epObj(ptr(true), "n1", "10.0.1.1"), epObj(ptr(true), "n2", "10.0.2.1")), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitTable("two ready endpoints", func(l []string) bool { return slices.Contains(l, fe+"10.0.1.1:8080,10.0.2.1:8080") })
	sl.Endpoints[1].Conditions.Ready = ptr(false)
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(t.Context(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitTable("one not ready", func(l []string) bool { return slices.Contains(l, fe+"10.0.1.1:8080") })
	if err := cs.CoreV1().Services("default").Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitTable("service deleted", func(l []string) bool {
		return !slices.ContainsFunc(l, func(s string) bool { return strings.HasPrefix(s, vip+":") })
	})
}

// TestServiceWatchRBAC: the chart's agent role lets the watch list and
// watch Services and every EndpointSlice.
func TestServiceWatchRBAC(t *testing.T) {
	cl := k8stest.Start(t)
	applyAgentRBAC(t, cl, rbacNS)
	sa := cl.ServiceAccountConfig(t, rbacNS, "moat-agent")
	cs, err := kubernetes.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewServiceWatch(cs, "n1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if !w.WaitForCacheSync(ctx) {
		t.Fatal("service watch with the agent's token never synced: the role lacks list/watch on services or endpointslices")
	}
	if len(w.Table()) == 0 {
		t.Error("no frontend, not even default/kubernetes")
	}
}
