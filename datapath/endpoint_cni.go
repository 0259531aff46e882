package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/moatnet/moat/policy"
)

// Endpoints in a container runtime's netns (moat-cni). The runtime creates
// and deletes the netns; the manager makes the same routed veth in it as it
// does for its own endpoints (ensureVeth, ensurePodSide, ensureHostSide),
// with the pod-side name the runtime asked for and a host-side name derived
// from the attachment (container ID and interface), so that a pod's new
// sandbox never collides with its old one. Afterwards the agent treats the
// host side as adopted (policy.Endpoint.Interface): reconciles only repair
// the host side, and RemoveRuntimeLink deletes the pair on DEL.

// RuntimeLink names a veth moat-cni makes in a runtime's netns.
type RuntimeLink struct {
	// Netns is the path of the netns (CNI_NETNS).
	Netns string
	// PodIfname is the interface inside it (CNI_IFNAME).
	PodIfname string
	// HostIfname is the host side (RuntimeHostIfname).
	HostIfname string
}

// RuntimeHostIfname derives the host-side veth name of one CNI attachment.
func RuntimeHostIfname(containerID, ifname string) string {
	return epHostIfPrefix + epHash(12, "cni", containerID, ifname)
}

// EnsureInNetns makes ep's routed veth inside the runtime's netns l.Netns
// (which must exist; it is never created or deleted here). Idempotent.
func (m *EndpointManager) EnsureInNetns(ctx context.Context, ep policy.Endpoint, l RuntimeLink) (EndpointLink, error) {
	if err := epValidate(m.cfg.NetnsPrefix, ep); err != nil {
		return EndpointLink{}, err
	}
	if l.Netns == "" || l.PodIfname == "" || l.HostIfname == "" {
		return EndpointLink{}, fmt.Errorf("ensure endpoint %s/%s: netns, pod and host interface names are required", ep.Namespace, ep.Name)
	}
	if ep.IPv6.IsValid() && !m.cfg.GatewayIPv6.IsValid() {
		return EndpointLink{}, fmt.Errorf("ensure endpoint %s/%s: ipv6 address but no ipv6 gateway", ep.Namespace, ep.Name)
	}
	ep.Interface = ""
	m.mu.Lock()
	defer m.mu.Unlock()
	link, err := m.ensureInNetns(ctx, ep, l)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("ensure endpoint %s/%s in netns %s: %w", ep.Namespace, ep.Name, l.Netns, err)
	}
	return link, nil
}

func (m *EndpointManager) ensureInNetns(ctx context.Context, ep policy.Endpoint, l RuntimeLink) (EndpointLink, error) {
	podNs, err := netns.GetFromPath(l.Netns)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netns: %w", err)
	}
	defer podNs.Close()
	pod, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netlink in netns: %w", err)
	}
	defer pod.Close()
	if owner, ok := m.podOwner(pod); ok && owner != epAlias(m.cfg.NetnsPrefix, ep) {
		return EndpointLink{}, fmt.Errorf("netns already belongs to %q", owner)
	}
	hostLink, podLink, err := m.ensureVeth(ctx, vethNames{host: l.HostIfname, pod: l.PodIfname, netns: l.Netns}, podNs, pod)
	if err != nil {
		return EndpointLink{}, err
	}
	if err := m.ensurePodSide(ep, pod, podLink, hostLink.Attrs().HardwareAddr); err != nil {
		return EndpointLink{}, err
	}
	if err := m.ensureHostSide(ep, hostLink); err != nil {
		return EndpointLink{}, err
	}
	return EndpointLink{
		Namespace: ep.Namespace, Name: ep.Name, IPv4: ep.IPv4, IPv6: ep.IPv6,
		HostIfindex: hostLink.Attrs().Index, HostIfname: hostLink.Attrs().Name, HostMAC: hostLink.Attrs().HardwareAddr,
		Netns: l.Netns, PodIfindex: podLink.Attrs().Index, MAC: podLink.Attrs().HardwareAddr, Adopted: true,
	}, nil
}

// RemoveRuntimeLink deletes the host veth hostIfname (and with it its pod
// end and routes) if it carries ep's alias. A missing link is not an error;
// a link that is not ep's is left alone.
func (m *EndpointManager) RemoveRuntimeLink(ep policy.Endpoint, hostIfname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.host.LinkByName(hostIfname)
	if epNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get link %s: %w", hostIfname, err)
	}
	if l.Attrs().Alias != epAlias(m.cfg.NetnsPrefix, ep) {
		return nil
	}
	if err := m.host.LinkDel(l); err != nil && !epNotFound(err) {
		return fmt.Errorf("delete link %s: %w", hostIfname, err)
	}
	return nil
}

// CheckInNetns verifies ep's veth in a runtime netns: the host side exists,
// is up, carries ep's alias and routes to ep's addresses; unless podIfname
// is empty (chained: another plugin owns the pod side), the pod side in
// netns is its peer and holds ep's addresses. It returns the host link.
func (m *EndpointManager) CheckInNetns(ep policy.Endpoint, l RuntimeLink) (EndpointLink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hostLink, err := m.host.LinkByName(l.HostIfname)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("check host link %s: %w", l.HostIfname, err)
	}
	attrs := hostLink.Attrs()
	var errs []error
	if attrs.Alias != epAlias(m.cfg.NetnsPrefix, ep) {
		errs = append(errs, fmt.Errorf("host link %s: alias %q is not %q", attrs.Name, attrs.Alias, epAlias(m.cfg.NetnsPrefix, ep)))
	}
	if attrs.Flags&net.FlagUp == 0 {
		errs = append(errs, fmt.Errorf("host link %s is down", attrs.Name))
	}
	routes, err := m.podRoutes(attrs.Index)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("list routes of %s: %w", attrs.Name, err)
	}
	var have []netip.Prefix
	for _, r := range routes {
		if p, ok := epPrefix(r.Dst); ok {
			have = append(have, p)
		}
	}
	for _, p := range epHostPrefixes(ep) {
		if !slices.Contains(have, p) {
			errs = append(errs, fmt.Errorf("host link %s: no route to %v", attrs.Name, p))
		}
	}
	link := EndpointLink{Namespace: ep.Namespace, Name: ep.Name, IPv4: ep.IPv4, IPv6: ep.IPv6,
		HostIfindex: attrs.Index, HostIfname: attrs.Name, HostMAC: attrs.HardwareAddr, Netns: l.Netns, Adopted: true}
	if l.PodIfname != "" {
		if err := checkPodSide(ep, l, attrs, &link); err != nil {
			errs = append(errs, err)
		}
	}
	return link, errors.Join(errs...)
}

func checkPodSide(ep policy.Endpoint, l RuntimeLink, host *netlink.LinkAttrs, link *EndpointLink) error {
	podNs, err := netns.GetFromPath(l.Netns)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", l.Netns, err)
	}
	defer podNs.Close()
	pod, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return fmt.Errorf("open netlink in netns %s: %w", l.Netns, err)
	}
	defer pod.Close()
	podLink, err := pod.LinkByName(l.PodIfname)
	if err != nil {
		return fmt.Errorf("pod link %s in %s: %w", l.PodIfname, l.Netns, err)
	}
	if podLink.Attrs().Index != host.ParentIndex {
		return fmt.Errorf("pod link %s is not the peer of host link %s", l.PodIfname, host.Name)
	}
	link.PodIfindex, link.MAC = podLink.Attrs().Index, podLink.Attrs().HardwareAddr
	addrs, err := dump(func() ([]netlink.Addr, error) { return pod.AddrList(podLink, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of pod link %s: %w", l.PodIfname, err)
	}
	var have []netip.Prefix
	for _, a := range addrs {
		if p, ok := epPrefix(a.IPNet); ok {
			have = append(have, p)
		}
	}
	for _, p := range epHostPrefixes(ep) {
		if !slices.Contains(have, p) {
			return fmt.Errorf("pod link %s: address %v missing", l.PodIfname, p)
		}
	}
	return nil
}
