package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/k8s"
)

// noderoutes.go routes between nodes (Kubernetes mode, Config.NodeRoutes):
// one route per other node's pod CIDR via that node's InternalIP of the
// same family, in the main table, direct routing without encapsulation (the
// nodes must share a link, as on one L2 segment). Routes carry moat's route
// protocol number, which is how the reconciler tells its own routes from
// everyone else's: it replaces and deletes only those. Remote pods keep
// their addresses end to end, so their identity comes from the ipcache
// (the Kubernetes source compiles every remote pod).

// NodeRouteProtocol marks moat's routes to other nodes' pod CIDRs
// (rtnetlink protocol; `ip route show proto 77`).
const NodeRouteProtocol = netlink.RouteProtocol(77)

// NodeRoute is one route to another node's pods.
type NodeRoute struct {
	Dst  netip.Prefix
	Via  netip.Addr
	Node string
}

// ComputeNodeRoutes returns the routes self needs to every other node's pod
// CIDRs, sorted by destination. A CIDR without an InternalIP of its family,
// one that overlaps self's own pod CIDRs, or one claimed by two nodes (the
// first by name wins) gets no route; problems lists why.
func ComputeNodeRoutes(self string, nodes []k8s.NodeInfo) (routes []NodeRoute, problems []string) {
	var own []netip.Prefix
	for _, n := range nodes {
		if n.Name == self {
			own = append(own, n.PodCIDRs...)
		}
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, func(a, b k8s.NodeInfo) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	claimed := map[netip.Prefix]string{}
	for _, n := range sorted {
		if n.Name == self {
			continue
		}
		for _, cidr := range n.PodCIDRs {
			cidr = cidr.Masked()
			var via netip.Addr
			for _, a := range n.Addresses {
				if a.Is4() == cidr.Addr().Is4() && (!via.IsValid() || a.Less(via)) {
					via = a
				}
			}
			switch {
			case !via.IsValid():
				problems = append(problems, fmt.Sprintf("node %s: no InternalIP for pod CIDR %s", n.Name, cidr))
				continue
			case slices.ContainsFunc(own, func(p netip.Prefix) bool { return p.Overlaps(cidr) }):
				problems = append(problems, fmt.Sprintf("node %s: pod CIDR %s overlaps this node's", n.Name, cidr))
				continue
			}
			if other, ok := claimed[cidr]; ok {
				problems = append(problems, fmt.Sprintf("node %s: pod CIDR %s is node %s's too", n.Name, cidr, other))
				continue
			}
			claimed[cidr] = n.Name
			routes = append(routes, NodeRoute{Dst: cidr, Via: via, Node: n.Name})
		}
	}
	slices.SortFunc(routes, func(a, b NodeRoute) int { return a.Dst.Compare(b.Dst) })
	return routes, problems
}

// NodeRouter applies NodeRoutes to one netns's main table.
type NodeRouter struct {
	h *netlink.Handle
}

// NewNodeRouter opens netlink in the netns at nsPath ("" for the calling
// process's).
func NewNodeRouter(nsPath string) (*NodeRouter, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return &NodeRouter{h: h}, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in %s: %w", nsPath, err)
	}
	return &NodeRouter{h: h}, nil
}

// Close releases the netlink handle.
func (r *NodeRouter) Close() { r.h.Close() }

// Installed returns moat's node routes in the main table.
func (r *NodeRouter) Installed() ([]NodeRoute, error) {
	var out []NodeRoute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := r.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: NodeRouteProtocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return nil, fmt.Errorf("list node routes: %w", err)
		}
		for _, rt := range rs {
			if rt.Dst == nil {
				continue
			}
			dst, ok := prefixOf(rt.Dst)
			if !ok {
				continue
			}
			via, _ := netip.AddrFromSlice(rt.Gw)
			out = append(out, NodeRoute{Dst: dst, Via: via.Unmap()})
		}
	}
	slices.SortFunc(out, func(a, b NodeRoute) int { return a.Dst.Compare(b.Dst) })
	return out, nil
}

// Sync makes moat's node routes exactly want: missing and changed ones are
// replaced, others of moat's deleted; routes of any other protocol are
// never touched. Every route is tried; the error joins the failures.
func (r *NodeRouter) Sync(want []NodeRoute) error {
	have, err := r.Installed()
	if err != nil {
		return err
	}
	var errs []error
	wanted := map[netip.Prefix]bool{}
	for _, w := range want {
		wanted[w.Dst] = true
		i := slices.IndexFunc(have, func(h NodeRoute) bool { return h.Dst == w.Dst })
		if i >= 0 && have[i].Via == w.Via {
			continue
		}
		rt := &netlink.Route{Dst: ipNet(w.Dst), Gw: w.Via.AsSlice(), Protocol: NodeRouteProtocol, Table: unix.RT_TABLE_MAIN}
		if err := r.h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s (node %s): %w", w.Dst, w.Via, w.Node, err))
		}
	}
	for _, h := range have {
		if wanted[h.Dst] {
			continue
		}
		rt := &netlink.Route{Dst: ipNet(h.Dst), Protocol: NodeRouteProtocol, Table: unix.RT_TABLE_MAIN}
		if err := r.h.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", h.Dst, err))
		}
	}
	return errors.Join(errs...)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// RemoveNodeRoutes deletes every moat node route of the calling process's
// netns (`moat-agent cleanup`, and a stop with CNIRemoveConfOnExit).
func RemoveNodeRoutes() error {
	r, err := NewNodeRouter("")
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Sync(nil)
}

// nodeRouteLoop keeps the routes in line with the Node objects: on every
// node change and every resync interval.
type nodeRouteLoop struct {
	src    *k8s.Source
	router *NodeRouter
	self   string
	log    *slog.Logger
	kick   chan struct{}
	// removeOnExit deletes the routes when the loop ends.
	removeOnExit bool
}

func (l *nodeRouteLoop) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

func (l *nodeRouteLoop) run(ctx context.Context) error {
	defer l.router.Close()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	var lastProblems, lastErr string
	for {
		if l.src.NodesSynced() {
			want, problems := ComputeNodeRoutes(l.self, l.src.Nodes())
			if p := fmt.Sprint(problems); p != lastProblems && len(problems) > 0 {
				l.log.Warn("node routes: pod CIDRs left unrouted", "problems", problems)
				lastProblems = p
			}
			err := l.router.Sync(want)
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if msg != lastErr {
				if err != nil {
					l.log.Error("node routes", "err", err)
				} else {
					l.log.Info("node routes in place", "routes", len(want))
				}
				lastErr = msg
			}
		}
		select {
		case <-ctx.Done():
			if l.removeOnExit {
				if err := l.router.Sync(nil); err != nil {
					return fmt.Errorf("remove node routes: %w", err)
				}
			}
			return nil
		case <-l.kick:
		case <-t.C:
		}
	}
}

// kubeNodeParts opens what Kubernetes mode runs beside the source: the
// moat-cni installer and the node route loop (none in standalone mode).
func (a *Agent) kubeNodeParts(context.Context) ([]func(context.Context) error, error) {
	ks, ok := a.src.(*kubeSource)
	if !ok {
		return nil, nil
	}
	var run []func(context.Context) error
	if a.cni != nil && a.cfg.CNIBinDir != "" {
		if err := a.installCNIBinary(); err != nil {
			return nil, err
		}
		run = append(run, a.runCNIInstall)
	}
	if a.cfg.NodeRoutes {
		router, err := NewNodeRouter(a.nodeRoutesNetns)
		if err != nil {
			return nil, err
		}
		l := &nodeRouteLoop{src: ks.src, router: router, self: a.cfg.NodeName, log: a.log.With("component", "noderoutes"),
			kick: make(chan struct{}, 1), removeOnExit: a.cfg.CNIRemoveConfOnExit}
		if err := ks.src.OnNodesChanged(l.wake); err != nil {
			router.Close()
			return nil, err
		}
		run = append(run, l.run)
	}
	return run, nil
}
