package k8s

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// attachments.go is what the CNI side of the agent needs from the
// informers: local pods' addresses from the CNI's attachments, a pod's
// labels and UID while its sandbox is made, and the nodes' pod CIDRs and
// addresses for the address pool and the routes between nodes.

// Attachment is where the CNI put a local pod.
type Attachment struct {
	IPv4, IPv6 netip.Addr
	// HostIfname is the host side of the pod's veth.
	HostIfname string
}

// PodAttachments answers, for a local pod, where the CNI attached it. It is
// called from Drain; it must be safe for concurrent use.
type PodAttachments interface {
	Attachment(namespace, name, uid string) (Attachment, bool)
}

// TouchPod makes the next Drain re-apply one pod (its attachment
// changed). Safe from any goroutine.
func (s *Source) TouchPod(namespace, name string) {
	s.mu.Lock()
	s.dirty[objKey{kind: kindPod, namespace: namespace, name: name}] = struct{}{}
	s.mu.Unlock()
	s.wake()
}

// PodInfo is what the informer cache holds of a pod.
type PodInfo struct {
	UID      string
	NodeName string
	Labels   map[string]string
	// HostNetwork pods get no sandbox network.
	HostNetwork bool
}

// Pod returns a pod from the informer cache.
func (s *Source) Pod(namespace, name string) (PodInfo, bool) {
	obj, ok, _ := s.pods.GetStore().GetByKey(namespace + "/" + name)
	if !ok {
		return PodInfo{}, false
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return PodInfo{}, false
	}
	return PodInfo{UID: string(p.UID), NodeName: p.Spec.NodeName, Labels: p.Labels, HostNetwork: p.Spec.HostNetwork}, true
}

// NodeInfo is one Node's name, InternalIP addresses and pod CIDRs.
type NodeInfo struct {
	Name      string
	Addresses []netip.Addr
	PodCIDRs  []netip.Prefix
}

// Nodes returns every node in the informer cache, sorted by name. A
// malformed pod CIDR is skipped.
func (s *Source) Nodes() []NodeInfo {
	var out []NodeInfo
	for _, obj := range s.nodes.GetStore().List() {
		n, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		out = append(out, nodeInfo(n))
	}
	slices.SortFunc(out, func(a, b NodeInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func nodeInfo(n *corev1.Node) NodeInfo {
	ni := NodeInfo{Name: n.Name, Addresses: nodeAddrs(n)}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			ni.PodCIDRs = append(ni.PodCIDRs, p.Masked())
		}
	}
	return ni
}

// NodesSynced reports whether the node informer has its initial list.
func (s *Source) NodesSynced() bool { return s.nodes.HasSynced() }

// PodsSynced reports whether the pod informer has its initial list.
func (s *Source) PodsSynced() bool { return s.pods.HasSynced() }

// OnNodesChanged calls fn (without arguments, from the informer's
// goroutine; fn must not block) whenever a Node is added, changed or
// deleted. Register it before Run.
func (s *Source) OnNodesChanged(fn func()) error {
	_, err := s.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { fn() },
		UpdateFunc: func(_, _ any) { fn() },
		DeleteFunc: func(any) { fn() },
	})
	if err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	return nil
}
