// Endpoint plumbing for standalone mode (files endpoint*.go, netns*.go).
//
// In standalone mode a pod is a named network namespace. EndpointManager
// creates (or adopts) one per policy.Endpoint, with netlink only, never by
// running `ip`:
//
//   - netns /var/run/netns/<prefix><namespace>-<name> (hashed when long),
//     visible to `ip netns`;
//   - a veth pair: host side "lxc" + 12 hex digits (a hash of prefix,
//     namespace and name), pod side eth0; the host side's ifalias
//     "moat:<prefix>:<namespace>/<name>" (also set on the pod's lo and eth0)
//     marks it as managed, which is how a restarted agent finds (List),
//     adopts (Ensure) or cleans up (Prune) what the last one built;
//   - in the pod: lo up, the endpoint's /32 (and /128, no DAD) on eth0, a
//     default route via the gateway (IPv4 onlink; IPv6 via a link-local
//     gateway) and a permanent neighbour entry for the gateway carrying the
//     host veth's MAC;
//   - on the host: the gateway address on every host veth (IPv4 as a
//     scope-link /32, IPv6 as a link-local /128 without prefix route), a /32
//     (/128) route per pod IP to the host veth, and per-interface forwarding.
//
// Why a shared gateway address. 169.254.42.1 sits in the IPv4 link-local
// block (RFC 3927): never routed, never handed out by DHCP, clear of the
// cloud metadata address 169.254.169.254. Linux accepts the same address on
// many interfaces (one local route per device), so each pod sees its gateway
// on its own link, the kernel answers ARP for it without proxy_arp, and no
// pod-range address is spent. Scope link keeps the kernel from choosing it as
// a source address for anything but traffic to pods; traffic the host itself
// sends to a pod therefore comes from 169.254.42.1, which the datapath must
// map to the host identity. The pod-side permanent neighbour entry makes
// resolution independent of the host's arp_ignore (arp_ignore=2 would refuse
// a request from 10.x for a 169.254.x target). Pods can reach sockets the
// host binds to 0.0.0.0 through the gateway address: policy decides.
//
// What the kernel needs (verified on 6.18). IPv4 forwards a packet when the
// ingress device has forwarding=1 (/proc/sys/net/ipv4/conf/<if>/forwarding),
// so the manager sets it on each host veth and net.ipv4.ip_forward may stay
// 0. IPv6 forwarding per interface needs force_forwarding (Linux 6.17+);
// on older kernels the manager requires net.ipv6.conf.all.forwarding=1 and
// says so. rp_filter (strict or loose) passes because every pod IP has a
// host route via its own veth; the pod's ARP requests pass the same check.
// No proxy_arp or proxy_ndp is needed.
//
// Adoption. When policy.Endpoint.Interface names an existing link, the
// manager treats it as the host side of a veth someone else made: it sets
// the alias, forwarding, gateway addresses and host routes, never touches
// the pod side, and Remove undoes only its own changes.
//
// Proxy routing. EnsureProxyRouting installs the policy routing that delivers
// packets marked to-proxy (0x200/0xf00, see ARCHITECTURE.md "Marks") locally:
// `ip rule fwmark 0x200/0xf00 lookup 2004` and `local 0.0.0.0/0 dev lo table
// 2004`, and the IPv6 equivalents.
//
// Never: run `ip`/iptables, change global sysctls, touch links or netns that
// carry no moat alias (except an adopted Interface, and only on the host
// side), or leave the calling goroutine's thread in another netns.

package datapath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/policy"
)

// EndpointLink describes the plumbing of one endpoint.
type EndpointLink struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	IPv4      netip.Addr `json:"ipv4,omitzero"`
	IPv6      netip.Addr `json:"ipv6,omitzero"`
	// HostIfindex and HostIfname name the host-side veth, where the datapath
	// attaches its programs.
	HostIfindex int              `json:"hostIfindex"`
	HostIfname  string           `json:"hostIfname"`
	HostMAC     net.HardwareAddr `json:"hostMAC,omitempty"`
	// Netns is the path of the pod's netns; empty for an adopted link whose
	// peer is not in a named netns under NetnsDir.
	Netns string `json:"netns,omitempty"`
	// PodIfindex and MAC describe the pod-side interface (eth0), as seen in
	// the pod's netns; zero/nil when unknown.
	PodIfindex int              `json:"podIfindex,omitempty"`
	MAC        net.HardwareAddr `json:"mac,omitempty"`
	// Adopted is true when the host link was not created by the manager
	// (policy.Endpoint.Interface).
	Adopted bool `json:"adopted,omitempty"`
}

// Endpoint returns the endpoint that Remove needs to undo this link.
func (l EndpointLink) Endpoint() policy.Endpoint {
	ep := policy.Endpoint{Namespace: l.Namespace, Name: l.Name, IPv4: l.IPv4, IPv6: l.IPv6}
	if l.Adopted {
		ep.Interface = l.HostIfname
	}
	return ep
}

// EndpointManager creates, adopts, lists and removes standalone endpoints. It
// is safe for concurrent use; changes are serialised.
type EndpointManager struct {
	cfg        EndpointConfig
	log        *slog.Logger
	hostNsPath string
	hostNs     netns.NsHandle
	host       *netlink.Handle

	mu sync.Mutex
	// routeRef holds this manager's reference on the host's proxy
	// routing (see EnsureProxyRouting); guarded by mu.
	routeRef *os.File
}

// NewEndpointManager applies defaults to cfg, validates it and opens a
// netlink handle in the host netns. Close releases it.
func NewEndpointManager(cfg EndpointConfig, log *slog.Logger) (*EndpointManager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hostNsPath := cfg.HostNetns
	if hostNsPath == "" {
		hostNsPath = fmt.Sprintf("/proc/%d/ns/net", os.Getpid())
	}
	hostNs, err := netns.GetFromPath(hostNsPath)
	if err != nil {
		return nil, fmt.Errorf("open host netns %s: %w", hostNsPath, err)
	}
	h, err := netlink.NewHandleAt(hostNs)
	if err != nil {
		hostNs.Close()
		return nil, fmt.Errorf("open netlink in host netns %s: %w", hostNsPath, err)
	}
	return &EndpointManager{cfg: cfg, log: log, hostNsPath: hostNsPath, hostNs: hostNs, host: h}, nil
}

// Close releases the manager's handles; endpoints stay as they are.
func (m *EndpointManager) Close() error {
	m.releaseProxyRouting()
	m.host.Close()
	return m.hostNs.Close()
}

// Config returns the effective configuration (defaults applied).
func (m *EndpointManager) Config() EndpointConfig { return m.cfg }

// NetnsPath returns the path of the netns the manager uses for ep.
func (m *EndpointManager) NetnsPath(ep policy.Endpoint) string {
	return filepath.Join(m.cfg.NetnsDir, epNetnsName(m.cfg.NetnsPrefix, ep))
}

// HostIfname returns the host-side interface of ep: ep.Interface when set,
// else the name the manager derives.
func (m *EndpointManager) HostIfname(ep policy.Endpoint) string {
	if ep.Interface != "" {
		return ep.Interface
	}
	return epHostIfname(m.cfg.NetnsPrefix, ep)
}

// Do runs fn on a locked OS thread inside ep's netns (created by the
// manager). Sockets fn opens belong to the pod and stay usable after Do
// returns. The caller's own thread never changes namespace.
func (m *EndpointManager) Do(ep policy.Endpoint, fn func() error) error {
	return netnsDo(m.NetnsPath(ep), fn)
}

// DoHost runs fn inside the host netns (HostNetns), like Do.
func (m *EndpointManager) DoHost(fn func() error) error {
	return netnsDo(m.hostNsPath, fn)
}

// Ensure makes ep's plumbing exist and match ep, creating what is missing and
// repairing what differs; it is idempotent and cheap when nothing changed.
func (m *EndpointManager) Ensure(ctx context.Context, ep policy.Endpoint) (EndpointLink, error) {
	if err := epValidate(m.cfg.NetnsPrefix, ep); err != nil {
		return EndpointLink{}, err
	}
	if ep.IPv6.IsValid() && !m.cfg.GatewayIPv6.IsValid() {
		return EndpointLink{}, fmt.Errorf("ensure endpoint %s/%s: ipv6 address but no ipv6 gateway", ep.Namespace, ep.Name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var (
		link EndpointLink
		err  error
	)
	if ep.Interface != "" {
		link, err = m.ensureAdopted(ctx, ep)
	} else {
		link, err = m.ensureCreated(ctx, ep)
	}
	if err != nil {
		return EndpointLink{}, fmt.Errorf("ensure endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	m.log.DebugContext(ctx, "endpoint ensured", "namespace", ep.Namespace, "name", ep.Name,
		"host_ifname", link.HostIfname, "host_ifindex", link.HostIfindex, "netns", link.Netns, "adopted", link.Adopted)
	return link, nil
}

func (m *EndpointManager) ensureCreated(ctx context.Context, ep policy.Endpoint) (EndpointLink, error) {
	nsPath := m.NetnsPath(ep)
	mounted, err := netnsIsMounted(nsPath)
	if err != nil {
		return EndpointLink{}, err
	}
	if !mounted {
		// A stale file (crash between create and mount) is replaced.
		if err := netnsDelete(nsPath); err != nil {
			return EndpointLink{}, err
		}
		if err := netnsCreate(nsPath); err != nil {
			return EndpointLink{}, err
		}
		m.log.InfoContext(ctx, "created endpoint netns", "netns", nsPath)
	}
	if err := ctx.Err(); err != nil {
		return EndpointLink{}, err
	}
	podNs, err := netns.GetFromPath(nsPath)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer podNs.Close()
	pod, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netlink in netns %s: %w", nsPath, err)
	}
	defer pod.Close()

	if owner, ok := m.podOwner(pod); ok && owner != epAlias(m.cfg.NetnsPrefix, ep) {
		return EndpointLink{}, fmt.Errorf("netns %s already belongs to %q", nsPath, owner)
	}
	hostLink, podLink, err := m.ensureVeth(ctx, vethNames{host: epHostIfname(m.cfg.NetnsPrefix, ep), pod: epPodIfname, netns: nsPath}, podNs, pod)
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
		Netns: nsPath, PodIfindex: podLink.Attrs().Index, MAC: podLink.Attrs().HardwareAddr,
	}, nil
}

// podOwner returns the alias of the pod's lo (or, failing that, eth0), which
// names the endpoint that owns the netns.
func (m *EndpointManager) podOwner(pod *netlink.Handle) (string, bool) {
	for _, name := range []string{"lo", epPodIfname} {
		if l, err := pod.LinkByName(name); err == nil && l.Attrs().Alias != "" {
			return l.Attrs().Alias, true
		}
	}
	return "", false
}

// vethNames names the two ends of an endpoint's veth and the pod's netns.
type vethNames struct{ host, pod, netns string }

// ensureVeth returns the host and pod ends of ep's veth, (re)creating the
// pair unless both ends exist and point at each other.
func (m *EndpointManager) ensureVeth(ctx context.Context, names vethNames, podNs netns.NsHandle, pod *netlink.Handle) (netlink.Link, netlink.Link, error) {
	hostIf, podIf := names.host, names.pod
	nsid, err := m.host.GetNetNsIdByFd(int(podNs))
	if err != nil {
		return nil, nil, fmt.Errorf("get netns id of %s: %w", names.netns, err)
	}
	hostLink, hostErr := m.host.LinkByName(hostIf)
	podLink, podErr := pod.LinkByName(podIf)
	if hostErr == nil && podErr == nil && nsid >= 0 &&
		hostLink.Type() == "veth" && hostLink.Attrs().NetNsID == nsid &&
		hostLink.Attrs().ParentIndex == podLink.Attrs().Index {
		return hostLink, podLink, nil
	}
	// Something is missing or mismatched: start over with a fresh pair.
	if hostErr == nil {
		if err := m.host.LinkDel(hostLink); err != nil {
			return nil, nil, fmt.Errorf("delete stale link %s: %w", hostIf, err)
		}
	} else if !epNotFound(hostErr) {
		return nil, nil, fmt.Errorf("get link %s: %w", hostIf, hostErr)
	}
	if l, err := pod.LinkByName(podIf); err == nil {
		if err := pod.LinkDel(l); err != nil {
			return nil, nil, fmt.Errorf("delete stale pod link %s: %w", podIf, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostIf, MTU: m.cfg.MTU},
		PeerName:      podIf,
		PeerNamespace: netlink.NsFd(int(podNs)),
		PeerMTU:       uint32(m.cfg.MTU),
	}
	if err := m.host.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("add veth %s/%s: %w", hostIf, podIf, err)
	}
	m.log.InfoContext(ctx, "created endpoint veth", "host_ifname", hostIf, "netns", names.netns)
	if hostLink, err = m.host.LinkByName(hostIf); err != nil {
		return nil, nil, fmt.Errorf("get link %s: %w", hostIf, err)
	}
	if podLink, err = pod.LinkByName(podIf); err != nil {
		return nil, nil, fmt.Errorf("get pod link %s: %w", podIf, err)
	}
	return hostLink, podLink, nil
}

// ensurePodSide configures the inside of the pod's netns.
func (m *EndpointManager) ensurePodSide(ep policy.Endpoint, pod *netlink.Handle, podLink netlink.Link, hostMAC net.HardwareAddr) error {
	lo, err := pod.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("get pod link lo: %w", err)
	}
	if err := pod.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set pod link lo up: %w", err)
	}
	// The alias on lo marks the netns itself as ep's: it survives the loss
	// of the veth (see podOwner, Prune).
	alias := epAlias(m.cfg.NetnsPrefix, ep)
	if lo.Attrs().Alias != alias {
		if err := pod.LinkSetAlias(lo, alias); err != nil {
			return fmt.Errorf("set alias of pod link lo: %w", err)
		}
	}
	if podLink.Attrs().Alias != alias {
		if err := pod.LinkSetAlias(podLink, alias); err != nil {
			return fmt.Errorf("set alias of pod link %s: %w", podLink.Attrs().Name, err)
		}
	}
	if err := pod.LinkSetUp(podLink); err != nil {
		return fmt.Errorf("set pod link %s up: %w", podLink.Attrs().Name, err)
	}
	want := epHostPrefixes(ep)
	for _, p := range want {
		a := &netlink.Addr{IPNet: epIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := pod.AddrReplace(podLink, a); err != nil {
			return fmt.Errorf("add address %v to pod link %s: %w", p, podLink.Attrs().Name, err)
		}
	}
	// Drop addresses of a previous incarnation (the endpoint's IP changed).
	addrs, err := dump(func() ([]netlink.Addr, error) { return pod.AddrList(podLink, netlink.FAMILY_ALL) })
	if err != nil {
		return fmt.Errorf("list addresses of pod link %s: %w", podLink.Attrs().Name, err)
	}
	for _, a := range addrs {
		p, ok := epPrefix(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() || slices.Contains(want, p) {
			continue
		}
		if err := pod.AddrDel(podLink, &a); err != nil {
			return fmt.Errorf("delete stale address %v from pod link %s: %w", p, podLink.Attrs().Name, err)
		}
	}
	for _, gw := range m.gateways(ep) {
		n := &netlink.Neigh{
			LinkIndex:    podLink.Attrs().Index,
			Family:       epFamily(gw),
			State:        netlink.NUD_PERMANENT,
			IP:           gw.AsSlice(),
			HardwareAddr: hostMAC,
		}
		if err := pod.NeighSet(n); err != nil {
			return fmt.Errorf("set pod neighbour %v: %w", gw, err)
		}
		r := &netlink.Route{
			LinkIndex: podLink.Attrs().Index,
			Dst:       epIPNet(netip.PrefixFrom(epUnspecified(gw), 0)),
			Gw:        gw.AsSlice(),
		}
		if gw.Is4() {
			r.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := pod.RouteReplace(r); err != nil {
			return fmt.Errorf("set pod default route via %v: %w", gw, err)
		}
	}
	return nil
}

// ensureHostSide configures the host end of an endpoint's link: alias, up,
// forwarding, gateway addresses, one route per pod IP.
func (m *EndpointManager) ensureHostSide(ep policy.Endpoint, hostLink netlink.Link) error {
	name := hostLink.Attrs().Name
	alias := epAlias(m.cfg.NetnsPrefix, ep)
	if hostLink.Attrs().Alias != alias {
		if err := m.host.LinkSetAlias(hostLink, alias); err != nil {
			return fmt.Errorf("set alias of %s: %w", name, err)
		}
	}
	if err := m.setForwarding(name, ep.IPv6.IsValid()); err != nil {
		return err
	}
	if err := m.host.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for _, gw := range m.gateways(ep) {
		a := &netlink.Addr{IPNet: epIPNet(netip.PrefixFrom(gw, gw.BitLen()))}
		if gw.Is4() {
			a.Scope = int(netlink.SCOPE_LINK)
		} else {
			a.Flags = unix.IFA_F_NODAD | unix.IFA_F_NOPREFIXROUTE
		}
		if err := m.host.AddrReplace(hostLink, a); err != nil {
			return fmt.Errorf("add gateway %v to %s: %w", gw, name, err)
		}
	}
	want := epHostPrefixes(ep)
	for _, p := range want {
		if err := m.host.RouteReplace(m.hostRoute(hostLink.Attrs().Index, p)); err != nil {
			return fmt.Errorf("add route %v dev %s: %w", p, name, err)
		}
	}
	// Drop host routes of a previous incarnation.
	routes, err := m.podRoutes(hostLink.Attrs().Index)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", name, err)
	}
	for _, r := range routes {
		p, _ := epPrefix(r.Dst)
		if slices.Contains(want, p) {
			continue
		}
		if err := m.host.RouteDel(&r); err != nil && !epNotFound(err) {
			return fmt.Errorf("delete stale route %v dev %s: %w", p, name, err)
		}
	}
	return nil
}

func (m *EndpointManager) hostRoute(ifindex int, p netip.Prefix) *netlink.Route {
	r := &netlink.Route{LinkIndex: ifindex, Dst: epIPNet(p)}
	if p.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// podRoutes lists the host routes to single pod addresses through ifindex in
// the main table (not kernel-made ones such as fe80::/64).
func (m *EndpointManager) podRoutes(ifindex int) ([]netlink.Route, error) {
	all, err := dump(func() ([]netlink.Route, error) {
		return m.host.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: ifindex, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, err
	}
	var out []netlink.Route
	for _, r := range all {
		p, ok := epPrefix(r.Dst)
		if !ok || r.Protocol == unix.RTPROT_KERNEL || p.Bits() != p.Addr().BitLen() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// setForwarding enables forwarding of packets that arrive on ifname.
func (m *EndpointManager) setForwarding(ifname string, v6 bool) error {
	return netnsDo(m.hostNsPath, func() error {
		if err := epWriteSysctl("net/ipv4/conf/"+ifname+"/forwarding", "1"); err != nil {
			return err
		}
		if !v6 {
			return nil
		}
		err := epWriteSysctl("net/ipv6/conf/"+ifname+"/force_forwarding", "1")
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		// Before Linux 6.17 only the global switch forwards IPv6.
		if v, rerr := os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding"); rerr == nil && len(v) > 0 && v[0] == '1' {
			return nil
		}
		return fmt.Errorf("enable ipv6 forwarding on %s: kernel lacks per-interface force_forwarding (Linux 6.17+); set net.ipv6.conf.all.forwarding=1", ifname)
	})
}

// epWriteSysctl writes value to /proc/sys/<key> of the calling thread's
// netns.
func epWriteSysctl(key, value string) error {
	path := "/proc/sys/" + key
	if cur, err := os.ReadFile(path); err == nil && string(cur) == value+"\n" {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s: %w", key, err)
	}
	return nil
}

func (m *EndpointManager) ensureAdopted(ctx context.Context, ep policy.Endpoint) (EndpointLink, error) {
	hostLink, err := m.host.LinkByName(ep.Interface)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("adopt interface %s: %w", ep.Interface, err)
	}
	if err := ctx.Err(); err != nil {
		return EndpointLink{}, err
	}
	if err := m.ensureHostSide(ep, hostLink); err != nil {
		return EndpointLink{}, err
	}
	return m.describe(hostLink, ep.Namespace, ep.Name, true)
}

// describe builds the EndpointLink of a managed host link from kernel state.
func (m *EndpointManager) describe(hostLink netlink.Link, namespace, name string, adopted bool) (EndpointLink, error) {
	attrs := hostLink.Attrs()
	link := EndpointLink{
		Namespace: namespace, Name: name, Adopted: adopted,
		HostIfindex: attrs.Index, HostIfname: attrs.Name, HostMAC: attrs.HardwareAddr,
	}
	routes, err := m.podRoutes(attrs.Index)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("list routes of %s: %w", attrs.Name, err)
	}
	for _, r := range routes {
		p, _ := epPrefix(r.Dst)
		if a := p.Addr(); a.Is4() && (!link.IPv4.IsValid() || a.Less(link.IPv4)) {
			link.IPv4 = a
		} else if a.Is6() && (!link.IPv6.IsValid() || a.Less(link.IPv6)) {
			link.IPv6 = a
		}
	}
	if hostLink.Type() != "veth" || attrs.NetNsID < 0 {
		return link, nil
	}
	if !adopted {
		link.Netns = m.NetnsPath(policy.Endpoint{Namespace: namespace, Name: name})
	} else if link.Netns, err = m.findNetns(attrs.NetNsID); err != nil {
		return EndpointLink{}, err
	}
	if link.Netns == "" {
		return link, nil
	}
	podNs, err := netns.GetFromPath(link.Netns)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netns %s: %w", link.Netns, err)
	}
	defer podNs.Close()
	pod, err := netlink.NewHandleAt(podNs)
	if err != nil {
		return EndpointLink{}, fmt.Errorf("open netlink in netns %s: %w", link.Netns, err)
	}
	defer pod.Close()
	if podLink, err := pod.LinkByIndex(attrs.ParentIndex); err == nil {
		link.PodIfindex = podLink.Attrs().Index
		link.MAC = podLink.Attrs().HardwareAddr
	}
	return link, nil
}

// findNetns returns the named netns under NetnsDir whose id (as seen from the
// host netns) is nsid, or "" if none is.
func (m *EndpointManager) findNetns(nsid int) (string, error) {
	entries, err := os.ReadDir(m.cfg.NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read netns dir %s: %w", m.cfg.NetnsDir, err)
	}
	for _, e := range entries {
		path := filepath.Join(m.cfg.NetnsDir, e.Name())
		h, err := netns.GetFromPath(path)
		if err != nil {
			continue
		}
		id, err := m.host.GetNetNsIdByFd(int(h))
		h.Close()
		if err == nil && id == nsid {
			return path, nil
		}
	}
	return "", nil
}

// List returns the endpoints this manager's prefix owns, found by the alias on
// their host links, sorted by namespace and name. A restarted agent uses it
// to adopt (Ensure) or clean up (Remove) what an earlier run built.
func (m *EndpointManager) List(ctx context.Context) ([]EndpointLink, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	links, err := dump(m.host.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []EndpointLink
	for _, l := range links {
		prefix, namespace, name, ok := epParseAlias(l.Attrs().Alias)
		if !ok || prefix != m.cfg.NetnsPrefix {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ep := policy.Endpoint{Namespace: namespace, Name: name}
		adopted := l.Attrs().Name != epHostIfname(m.cfg.NetnsPrefix, ep)
		link, err := m.describe(l, namespace, name, adopted)
		if err != nil {
			return nil, fmt.Errorf("describe endpoint %s/%s: %w", namespace, name, err)
		}
		out = append(out, link)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// Remove deletes ep's plumbing: veth (and with it its routes) and netns for a
// created endpoint; only the host routes, gateway addresses and alias for an
// adopted one. Missing pieces are not an error.
func (m *EndpointManager) Remove(ctx context.Context, ep policy.Endpoint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.remove(ctx, ep); err != nil {
		return fmt.Errorf("remove endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	m.log.DebugContext(ctx, "endpoint removed", "namespace", ep.Namespace, "name", ep.Name)
	return nil
}

func (m *EndpointManager) remove(ctx context.Context, ep policy.Endpoint) error {
	ifname := m.HostIfname(ep)
	alias := epAlias(m.cfg.NetnsPrefix, ep)
	hostLink, err := m.host.LinkByName(ifname)
	switch {
	case epNotFound(err):
		hostLink = nil
	case err != nil:
		return fmt.Errorf("get link %s: %w", ifname, err)
	case hostLink.Attrs().Alias != alias:
		// Not ours (or not ours any more): leave the link alone.
		hostLink = nil
	}
	if hostLink != nil && ep.Interface == "" {
		if err := m.host.LinkDel(hostLink); err != nil && !epNotFound(err) {
			return fmt.Errorf("delete link %s: %w", ifname, err)
		}
	}
	if hostLink != nil && ep.Interface != "" {
		if err := m.unadopt(ep, hostLink); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if ep.Interface == "" {
		// A stale route to the pod through some other link is left alone:
		// routes through the deleted veth are gone with it.
		return netnsDelete(m.NetnsPath(ep))
	}
	return nil
}

func (m *EndpointManager) unadopt(ep policy.Endpoint, hostLink netlink.Link) error {
	name := hostLink.Attrs().Name
	routes, err := m.podRoutes(hostLink.Attrs().Index)
	if err != nil {
		return fmt.Errorf("list routes of %s: %w", name, err)
	}
	for _, r := range routes {
		if err := m.host.RouteDel(&r); err != nil && !epNotFound(err) {
			return fmt.Errorf("delete route %v dev %s: %w", r.Dst, name, err)
		}
	}
	for _, gw := range []netip.Addr{m.cfg.GatewayIPv4, m.cfg.GatewayIPv6} {
		a := &netlink.Addr{IPNet: epIPNet(netip.PrefixFrom(gw, gw.BitLen()))}
		if err := m.host.AddrDel(hostLink, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !epNotFound(err) {
			return fmt.Errorf("delete gateway %v from %s: %w", gw, name, err)
		}
	}
	if err := m.host.LinkSetAlias(hostLink, ""); err != nil {
		return fmt.Errorf("clear alias of %s: %w", name, err)
	}
	return nil
}

// gateways returns the gateway of each address family ep uses.
func (m *EndpointManager) gateways(ep policy.Endpoint) []netip.Addr {
	var gws []netip.Addr
	if ep.IPv4.IsValid() {
		gws = append(gws, m.cfg.GatewayIPv4)
	}
	if ep.IPv6.IsValid() {
		gws = append(gws, m.cfg.GatewayIPv6)
	}
	return gws
}

// epHostPrefixes returns ep's addresses as /32 and /128 prefixes.
func epHostPrefixes(ep policy.Endpoint) []netip.Prefix {
	var ps []netip.Prefix
	for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
		if a.IsValid() {
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return ps
}

func epIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func epPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func epUnspecified(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}

func epFamily(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// epNotFound reports whether a netlink error means "no such link/route/
// address".
func epNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENOENT)
}
