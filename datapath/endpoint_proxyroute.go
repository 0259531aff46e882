package datapath

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureProxyRouting installs, idempotently, the policy routing that delivers
// to-proxy packets locally in the host netns, for IPv4 and (when the kernel
// has it) IPv6:
//
//	ip rule add prio 9 fwmark 0x200/0xf00 lookup 2004
//	ip route replace local 0.0.0.0/0 dev lo table 2004
//
// Without it a packet that the tc program assigned to a proxy socket is
// forwarded instead and lost.
//
// The rule and route are host-wide: every agent of the host netns (one per
// pin root) needs the same ones. So they are reference-counted: each
// manager that ensured them holds a shared flock on one file per host netns
// (ProxyRoutingLockDir) until it closes, and RemoveProxyRouting deletes them
// only when it can take that lock exclusively, i.e. when no running agent
// uses them.
func (m *EndpointManager) EnsureProxyRouting(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.holdProxyRouting(); err != nil {
		return fmt.Errorf("ensure proxy routing: %w", err)
	}
	lo, err := m.host.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("ensure proxy routing: get link lo: %w", err)
	}
	for _, family := range m.proxyFamilies() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rules, err := m.proxyRules(family)
		if err != nil {
			return fmt.Errorf("ensure proxy routing: %w", err)
		}
		if len(rules) == 0 {
			if err := m.host.RuleAdd(m.proxyRule(family)); err != nil {
				return fmt.Errorf("ensure proxy routing: add rule fwmark %#x/%#x lookup %d: %w",
					m.cfg.ProxyMark, m.cfg.ProxyMask, m.cfg.RouteTableProxy, err)
			}
		}
		if err := m.host.RouteReplace(m.proxyRoute(family, lo.Attrs().Index)); err != nil {
			return fmt.Errorf("ensure proxy routing: add local default route to table %d: %w", m.cfg.RouteTableProxy, err)
		}
	}
	m.log.DebugContext(ctx, "proxy routing ensured", "table", m.cfg.RouteTableProxy,
		"mark", m.cfg.ProxyMark, "mask", m.cfg.ProxyMask)
	return nil
}

// RemoveProxyRouting deletes what EnsureProxyRouting installed, unless
// another manager (a running agent) still holds a reference on it: then it
// returns an error wrapping ErrProxyRoutingInUse and deletes nothing. What
// is already gone is not an error. This manager's own reference goes.
func (m *EndpointManager) RemoveProxyRouting(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.proxyRoutingRef()
	if err != nil {
		return fmt.Errorf("remove proxy routing: %w", err)
	}
	m.routeRef = nil
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("remove proxy routing: %w (lock %s)", ErrProxyRoutingInUse, f.Name())
		}
		return fmt.Errorf("remove proxy routing: lock %s: %w", f.Name(), err)
	}
	lo, err := m.host.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("remove proxy routing: get link lo: %w", err)
	}
	for _, family := range m.proxyFamilies() {
		if err := ctx.Err(); err != nil {
			return err
		}
		rules, err := m.proxyRules(family)
		if err != nil {
			return fmt.Errorf("remove proxy routing: %w", err)
		}
		for _, r := range rules {
			if err := m.host.RuleDel(&r); err != nil && !epNotFound(err) {
				return fmt.Errorf("remove proxy routing: delete rule: %w", err)
			}
		}
		if err := m.host.RouteDel(m.proxyRoute(family, lo.Attrs().Index)); err != nil && !epNotFound(err) {
			return fmt.Errorf("remove proxy routing: delete local default route from table %d: %w", m.cfg.RouteTableProxy, err)
		}
	}
	return nil
}

// ProxyRoutingInstalled reports whether every rule and route of
// EnsureProxyRouting is present.
func (m *EndpointManager) ProxyRoutingInstalled() (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, family := range m.proxyFamilies() {
		rules, err := m.proxyRules(family)
		if err != nil || len(rules) == 0 {
			return false, err
		}
		routes, err := dump(func() ([]netlink.Route, error) {
			return m.host.RouteListFiltered(family, &netlink.Route{Table: m.cfg.RouteTableProxy}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return false, fmt.Errorf("list routes of table %d: %w", m.cfg.RouteTableProxy, err)
		}
		found := false
		for _, r := range routes {
			if r.Type == unix.RTN_LOCAL && (r.Dst == nil || epIsDefault(r.Dst)) {
				found = true
			}
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}

// proxyFamilies returns the families to configure: IPv6 only when the host
// netns has IPv6.
func (m *EndpointManager) proxyFamilies() []int {
	fams := []int{netlink.FAMILY_V4}
	var has6 bool
	_ = netnsDo(m.hostNsPath, func() error {
		has6 = epSysctlExists("net/ipv6/conf/all/disable_ipv6")
		return nil
	})
	if has6 {
		fams = append(fams, netlink.FAMILY_V6)
	}
	return fams
}

func (m *EndpointManager) proxyRule(family int) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = family
	r.Priority = m.cfg.ProxyRulePriority
	r.Mark = m.cfg.ProxyMark
	mask := m.cfg.ProxyMask
	r.Mask = &mask
	r.Table = m.cfg.RouteTableProxy
	return r
}

// proxyRules lists the installed rules equal to proxyRule (normally 0 or 1).
func (m *EndpointManager) proxyRules(family int) ([]netlink.Rule, error) {
	all, err := dump(func() ([]netlink.Rule, error) { return m.host.RuleList(family) })
	if err != nil {
		return nil, fmt.Errorf("list rules: %w", err)
	}
	var out []netlink.Rule
	for _, r := range all {
		if r.Priority == m.cfg.ProxyRulePriority && r.Mark == m.cfg.ProxyMark && r.Mask != nil &&
			*r.Mask == m.cfg.ProxyMask && r.Table == m.cfg.RouteTableProxy {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *EndpointManager) proxyRoute(family, loIndex int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if family == netlink.FAMILY_V6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return &netlink.Route{
		Family:    family,
		Dst:       dst,
		LinkIndex: loIndex,
		Table:     m.cfg.RouteTableProxy,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
	}
}

func epIsDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func epSysctlExists(key string) bool {
	_, err := os.Stat("/proc/sys/" + key)
	return err == nil
}

// ProxyRoutingLockDir holds the reference files of the host proxy routing,
// one per host netns. It is on a tmpfs, and flocks die with their process.
const ProxyRoutingLockDir = "/run/moat/lock"

// ErrProxyRoutingInUse: another manager (a running agent) uses the host's
// proxy routing.
var ErrProxyRoutingInUse = errors.New("in use by a running agent")

// proxyRoutingRef opens the reference file of this manager's host netns
// (named by the netns's device and inode), or returns the one it holds.
func (m *EndpointManager) proxyRoutingRef() (*os.File, error) {
	if m.routeRef != nil {
		return m.routeRef, nil
	}
	var st unix.Stat_t
	if err := unix.Stat(m.hostNsPath, &st); err != nil {
		return nil, fmt.Errorf("stat host netns %s: %w", m.hostNsPath, err)
	}
	if err := os.MkdirAll(ProxyRoutingLockDir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", ProxyRoutingLockDir, err)
	}
	path := filepath.Join(ProxyRoutingLockDir, fmt.Sprintf("proxy-routing-%d-%d.lock", st.Dev, st.Ino))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}

// holdProxyRouting takes this manager's shared reference (once). It waits
// for a RemoveProxyRouting in progress, so the rule it then installs is not
// deleted under it.
func (m *EndpointManager) holdProxyRouting() error {
	if m.routeRef != nil {
		return nil
	}
	f, err := m.proxyRoutingRef()
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	m.routeRef = f
	return nil
}

// releaseProxyRouting drops this manager's reference; the rule stays.
func (m *EndpointManager) releaseProxyRouting() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.routeRef != nil {
		m.routeRef.Close()
		m.routeRef = nil
	}
}
