package k8s

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/moatnet/moat/policy"
)

// services.go is the Service feed: Services and their EndpointSlices, in
// every namespace, turned into the table of ClusterIP frontends and their
// ready backends that the agent hands to the datapath's socket-level
// translation. What it covers, like kube-proxy for ClusterIPs:
//
//   - every ClusterIP of a Service of type ClusterIP, NodePort or
//     LoadBalancer (dual stack: spec.clusterIPs), TCP and UDP ports (SCTP
//     ports are left to kube-proxy); headless and ExternalName Services
//     have no frontend;
//   - backends from the EndpointSlices labelled with the Service's name,
//     of the frontend's address family: each ready endpoint (conditions.
//     ready unset counts as ready, as the API says) at the port whose name
//     and protocol match the Service port's;
//   - internalTrafficPolicy Local: only endpoints on this node;
//   - a Service labelled service.kubernetes.io/service-proxy-name belongs
//     to another proxy and is skipped, as kube-proxy does.
//
// Not covered (kube-proxy keeps serving them, it stays on the node):
// NodePorts, externalIPs and load-balancer IPs, session affinity
// (ClientIP), terminating endpoints as a fallback when none is ready.
// Only sockets in local endpoints' network namespaces are translated, so
// host-network pods and the node itself go through kube-proxy too.

// ServiceFrontend is one ClusterIP, port and protocol of a Service.
type ServiceFrontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto policy.Protocol
}

// ServiceEntry is a frontend, the Service and port it comes from, and its
// ready backends (sorted, distinct). A frontend with no ready backend has
// none: connections to it are refused.
type ServiceEntry struct {
	Frontend ServiceFrontend
	// Namespace, Name and PortName name the Service and its port.
	Namespace, Name, PortName string
	Backends                  []netip.AddrPort
}

// LabelServiceProxyName marks a Service that another proxy serves.
const LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"

// ServiceTable computes the table from Services and EndpointSlices
// (pure). node is this node's name (internalTrafficPolicy Local).
func ServiceTable(svcs []*corev1.Service, slices_ []*discoveryv1.EndpointSlice, node string) []ServiceEntry {
	bySvc := map[[2]string][]*discoveryv1.EndpointSlice{}
	for _, s := range slices_ {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := [2]string{s.Namespace, name}
		bySvc[k] = append(bySvc[k], s)
	}
	var out []ServiceEntry
	for _, svc := range svcs {
		if _, other := svc.Labels[LabelServiceProxyName]; other {
			continue
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		local := svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ipStr := range ips {
			ip, err := netip.ParseAddr(ipStr)
			if err != nil || ip.IsUnspecified() {
				continue // "None" (headless), or garbage
			}
			ip = ip.Unmap()
			family := discoveryv1.AddressTypeIPv4
			if ip.Is6() {
				family = discoveryv1.AddressTypeIPv6
			}
			for _, sp := range svc.Spec.Ports {
				proto := protocolOf(sp.Protocol)
				if proto == 0 || sp.Port <= 0 || sp.Port > 65535 {
					continue
				}
				e := ServiceEntry{
					Frontend:  ServiceFrontend{Addr: ip, Port: uint16(sp.Port), Proto: proto},
					Namespace: svc.Namespace, Name: svc.Name, PortName: sp.Name,
				}
				e.Backends = readyBackends(bySvc[[2]string{svc.Namespace, svc.Name}], family, sp, local, node)
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b ServiceEntry) int {
		return cmp.Or(a.Frontend.Addr.Compare(b.Frontend.Addr), cmp.Compare(a.Frontend.Port, b.Frontend.Port),
			cmp.Compare(a.Frontend.Proto, b.Frontend.Proto), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	// Two Services claiming one frontend (the apiserver prevents it): the
	// first in namespace/name order wins.
	return slices.CompactFunc(out, func(a, b ServiceEntry) bool { return a.Frontend == b.Frontend })
}

func protocolOf(p corev1.Protocol) policy.Protocol {
	switch p {
	case corev1.ProtocolTCP, "":
		return policy.ProtoTCP
	case corev1.ProtocolUDP:
		return policy.ProtoUDP
	}
	return 0
}

func readyBackends(slices_ []*discoveryv1.EndpointSlice, family discoveryv1.AddressType, sp corev1.ServicePort, local bool, node string) []netip.AddrPort {
	set := map[netip.AddrPort]bool{}
	proto := sp.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, s := range slices_ {
		if s.AddressType != family {
			continue
		}
		port := -1
		for _, p := range s.Ports {
			pp := corev1.ProtocolTCP
			if p.Protocol != nil {
				pp = *p.Protocol
			}
			pn := ""
			if p.Name != nil {
				pn = *p.Name
			}
			if pn == sp.Name && pp == proto && p.Port != nil {
				port = int(*p.Port)
			}
		}
		if port <= 0 || port > 65535 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if local && (ep.NodeName == nil || *ep.NodeName != node) {
				continue
			}
			for _, a := range ep.Addresses {
				ip, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				set[netip.AddrPortFrom(ip.Unmap(), uint16(port))] = true
			}
		}
	}
	out := make([]netip.AddrPort, 0, len(set))
	for b := range set {
		out = append(out, b)
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

// ServiceWatch watches Services and EndpointSlices in every namespace.
// Its handlers only wake the consumer (Changed), who reads the whole table
// with Table: the datapath diffs it against what is installed.
type ServiceWatch struct {
	node     string
	log      *slog.Logger
	factory  informers.SharedInformerFactory
	sliceFac informers.SharedInformerFactory // with the service-name selector
	services cache.SharedIndexInformer
	slices   cache.SharedIndexInformer
	regs     []cache.ResourceEventHandlerRegistration
	kick     chan struct{}

	mu      sync.Mutex
	running bool
}

// NewServiceWatch builds the watch over cs; node is this node's name.
// Nothing talks to the API before Run.
func NewServiceWatch(cs kubernetes.Interface, node string, log *slog.Logger) (*ServiceWatch, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &ServiceWatch{node: node, log: log, kick: make(chan struct{}, 1)}
	w.factory = informers.NewSharedInformerFactory(cs, 0)
	w.services = w.factory.Core().V1().Services().Informer()
	// Only slices that belong to a Service.
	hasService, err := labels.NewRequirement(discoveryv1.LabelServiceName, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("build endpointslice selector: %w", err)
	}
	w.sliceFac = informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = labels.NewSelector().Add(*hasService).String()
	}))
	w.slices = w.sliceFac.Discovery().V1().EndpointSlices().Informer()
	for _, x := range []struct {
		inf cache.SharedIndexInformer
		tf  cache.TransformFunc
	}{{w.services, transformService}, {w.slices, transformServiceSlice}} {
		if err := x.inf.SetTransform(x.tf); err != nil {
			return nil, fmt.Errorf("set transform: %w", err)
		}
		reg, err := x.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { w.wake() },
			UpdateFunc: func(old, obj any) {
				if !sameVersion(old, obj) {
					w.wake()
				}
			},
			DeleteFunc: func(any) { w.wake() },
		})
		if err != nil {
			return nil, fmt.Errorf("add event handler: %w", err)
		}
		w.regs = append(w.regs, reg)
	}
	return w, nil
}

func (w *ServiceWatch) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Changed fires when the table may have changed.
func (w *ServiceWatch) Changed() <-chan struct{} { return w.kick }

// Run runs the informers until ctx ends.
func (w *ServiceWatch) Run(ctx context.Context) error {
	w.mu.Lock()
	w.running = true
	w.mu.Unlock()
	w.factory.Start(ctx.Done())
	w.sliceFac.Start(ctx.Done())
	<-ctx.Done()
	w.factory.Shutdown()
	w.sliceFac.Shutdown()
	return nil
}

// Synced reports whether both informers have their initial lists: until
// then the table is partial and must not replace what is installed.
func (w *ServiceWatch) Synced() bool {
	w.mu.Lock()
	running := w.running
	w.mu.Unlock()
	if !running {
		return false
	}
	for _, r := range w.regs {
		if !r.HasSynced() {
			return false
		}
	}
	return true
}

// WaitForCacheSync waits until Synced or ctx ends; it reports Synced.
func (w *ServiceWatch) WaitForCacheSync(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !w.Synced() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}

// Table returns the current table from the informers' caches.
func (w *ServiceWatch) Table() []ServiceEntry {
	var svcs []*corev1.Service
	for _, o := range w.services.GetStore().List() {
		if s, ok := o.(*corev1.Service); ok {
			svcs = append(svcs, s)
		}
	}
	var sl []*discoveryv1.EndpointSlice
	for _, o := range w.slices.GetStore().List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			sl = append(sl, s)
		}
	}
	return ServiceTable(svcs, sl, w.node)
}

// transformService keeps what ServiceTable reads.
func transformService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{ObjectMeta: slimMeta(&s.ObjectMeta)}
	out.Spec = corev1.ServiceSpec{
		Type: s.Spec.Type, ClusterIP: s.Spec.ClusterIP, ClusterIPs: s.Spec.ClusterIPs,
		InternalTrafficPolicy: s.Spec.InternalTrafficPolicy,
	}
	for _, p := range s.Spec.Ports {
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port})
	}
	return out, nil
}

// transformServiceSlice keeps what ServiceTable reads: ports, and each
// endpoint's addresses, readiness and node.
func transformServiceSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: slimMeta(&s.ObjectMeta), AddressType: s.AddressType, Ports: s.Ports}
	for _, e := range s.Endpoints {
		out.Endpoints = append(out.Endpoints, discoveryv1.Endpoint{
			Addresses: e.Addresses, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}, NodeName: e.NodeName,
		})
	}
	return out, nil
}
