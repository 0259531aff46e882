package datapath

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// epIOTimeout bounds every socket operation of the traffic checks.
const epIOTimeout = 5 * time.Second

// epTestEnv is a scratch "host" netns and a manager config that uses it, so a
// test never touches the real host's links, routes or rules.
type epTestEnv struct {
	cfg  EndpointConfig
	host *netlink.Handle
}

func newEpTestEnv(t *testing.T) *epTestEnv {
	t.Helper()
	testutil.Privileged(t)
	var rnd [3]byte
	_, _ = rand.Read(rnd[:])
	tag := "mt" + hex.EncodeToString(rnd[:])
	cfg := EndpointConfig{NetnsPrefix: tag + "-", NetnsDir: "/var/run/netns"}.WithDefaults()
	cfg.HostNetns = filepath.Join(cfg.NetnsDir, tag+"_host")
	testutil.Require(t, "named netns (unshare + bind mount)", netnsCreate(cfg.HostNetns))
	t.Cleanup(func() {
		// Deleting the scratch host netns takes its veths, routes and
		// rules along; the pod netns files go by prefix.
		paths, _ := filepath.Glob(filepath.Join(cfg.NetnsDir, tag+"*"))
		for _, p := range paths {
			if err := netnsDelete(p); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	hostNs, err := netns.GetFromPath(cfg.HostNetns)
	testutil.Require(t, "open scratch netns", err)
	t.Cleanup(func() { hostNs.Close() })
	h, err := netlink.NewHandleAt(hostNs)
	testutil.Require(t, "netlink in scratch netns", err)
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	testutil.Require(t, "lo in scratch netns", err)
	testutil.Require(t, "set lo up", h.LinkSetUp(lo))
	// Global forwarding off: per-interface forwarding must be enough.
	testutil.Require(t, "global forwarding off", netnsDo(cfg.HostNetns, func() error {
		if err := epWriteSysctl("net/ipv4/ip_forward", "0"); err != nil {
			return err
		}
		if err := epWriteSysctl("net/ipv6/conf/all/forwarding", "0"); err != nil {
			return err
		}
		// Strict reverse-path filtering must pass too.
		return epWriteSysctl("net/ipv4/conf/all/rp_filter", "1")
	}))
	return &epTestEnv{cfg: cfg, host: h}
}

func (e *epTestEnv) manager(t *testing.T) *EndpointManager {
	t.Helper()
	m, err := NewEndpointManager(e.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("NewEndpointManager: %v", err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func epTestEndpoint(name, v4, v6 string) policy.Endpoint {
	ep := policy.Endpoint{Namespace: "test", Name: name, IPv4: netip.MustParseAddr(v4)}
	if v6 != "" {
		ep.IPv6 = netip.MustParseAddr(v6)
	}
	return ep
}

func TestPrivilegedEndpointTraffic(t *testing.T) {
	env := newEpTestEnv(t)
	m := env.manager(t)
	ctx := t.Context()
	a := epTestEndpoint("a", "10.200.1.1", "fd00:200::1")
	b := epTestEndpoint("b", "10.200.1.2", "fd00:200::2")

	links := map[string]EndpointLink{}
	for _, ep := range []policy.Endpoint{a, b} {
		link, err := m.Ensure(ctx, ep)
		if err != nil {
			t.Fatalf("Ensure(%s): %v", ep.Name, err)
		}
		links[ep.Name] = link
		again, err := m.Ensure(ctx, ep)
		if err != nil {
			t.Fatalf("second Ensure(%s): %v", ep.Name, err)
		}
		if again.HostIfindex != link.HostIfindex || again.PodIfindex != link.PodIfindex || again.MAC.String() != link.MAC.String() {
			t.Fatalf("second Ensure(%s) rebuilt the endpoint: %+v, then %+v", ep.Name, link, again)
		}
		epCheckPlumbing(t, env, m, ep, link)
	}

	t.Run("tcp", func(t *testing.T) {
		for _, dst := range []netip.Addr{b.IPv4, b.IPv6} {
			t.Run(dst.String(), func(t *testing.T) {
				remote := epTCPExchange(t, m, a, b, dst)
				if want := a.IPv4; dst.Is4() && remote != want {
					t.Errorf("server saw peer %v, want %v (no NAT on the way)", remote, want)
				}
			})
		}
	})
	t.Run("udp", func(t *testing.T) {
		for _, dst := range []netip.Addr{b.IPv4, b.IPv6} {
			t.Run(dst.String(), func(t *testing.T) { epUDPExchange(t, m, a, b, dst) })
		}
	})
	t.Run("ping", func(t *testing.T) {
		epPing(t, m, a, a.IPv4, b.IPv4)
		epPing(t, m, a, a.IPv6, b.IPv6)
	})
	t.Run("host to pod comes from the gateway", func(t *testing.T) {
		srv := epListenTCP(t, m, b, b.IPv4)
		var conn net.Conn
		err := m.DoHost(func() (err error) {
			conn, err = net.DialTimeout("tcp", srv.Addr().String(), epIOTimeout)
			return err
		})
		if err != nil {
			t.Fatalf("dial %v from the host: %v", srv.Addr(), err)
		}
		defer conn.Close()
		if got := epAddrOf(conn.LocalAddr()); got != env.cfg.GatewayIPv4 {
			t.Errorf("host connection source = %v, want gateway %v", got, env.cfg.GatewayIPv4)
		}
	})
}

// epCheckPlumbing checks the kernel state Ensure promised for ep.
func epCheckPlumbing(t *testing.T, env *epTestEnv, m *EndpointManager, ep policy.Endpoint, link EndpointLink) {
	t.Helper()
	if link.Netns != m.NetnsPath(ep) || link.HostIfname != m.HostIfname(ep) || link.PodIfindex == 0 ||
		len(link.MAC) != 6 || link.Adopted || link.IPv4 != ep.IPv4 || link.IPv6 != ep.IPv6 {
		t.Fatalf("EndpointLink = %+v: incomplete for %v", link, ep)
	}
	if ok, err := netnsIsMounted(link.Netns); err != nil || !ok {
		t.Fatalf("netns %s mounted = %v, %v", link.Netns, ok, err)
	}
	hl, err := env.host.LinkByIndex(link.HostIfindex)
	if err != nil || hl.Attrs().Name != link.HostIfname || hl.Attrs().OperState != netlink.OperUp {
		t.Fatalf("host link %d: %v, %v; want %s up", link.HostIfindex, hl, err, link.HostIfname)
	}
	for _, p := range epHostPrefixes(ep) {
		routes, err := env.host.RouteGet(p.Addr().AsSlice())
		if err != nil || len(routes) != 1 || routes[0].LinkIndex != link.HostIfindex {
			t.Errorf("host route to %v = %+v, %v; want via ifindex %d", p, routes, err, link.HostIfindex)
		}
	}
	addrs, err := env.host.AddrList(hl, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("list host addresses: %v", err)
	}
	for _, gw := range []netip.Addr{env.cfg.GatewayIPv4, env.cfg.GatewayIPv6} {
		if !epHasAddr(addrs, gw) {
			t.Errorf("host link %s lacks gateway %v: %v", link.HostIfname, gw, addrs)
		}
	}
	err = m.DoHost(func() error {
		for _, key := range []string{"net/ipv4/conf/" + link.HostIfname + "/forwarding", "net/ipv6/conf/" + link.HostIfname + "/force_forwarding"} {
			if v, err := os.ReadFile("/proc/sys/" + key); err != nil || strings.TrimSpace(string(v)) != "1" {
				return fmt.Errorf("%s = %q, %v; want 1", key, v, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	err = m.Do(ep, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("pod eth0: %w", err)
		}
		if eth0.Attrs().Index != link.PodIfindex {
			return fmt.Errorf("pod eth0 index %d, link says %d", eth0.Attrs().Index, link.PodIfindex)
		}
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
			if !epHasAddr(addrs, a) {
				return fmt.Errorf("pod eth0 lacks %v: %v", a, addrs)
			}
		}
		for _, gw := range []netip.Addr{env.cfg.GatewayIPv4, env.cfg.GatewayIPv6} {
			far := netip.MustParseAddr("192.0.2.1") // any off-link address
			if gw.Is6() {
				far = netip.MustParseAddr("2001:db8::1")
			}
			routes, err := netlink.RouteGet(far.AsSlice())
			if err != nil || len(routes) != 1 || !routes[0].Gw.Equal(gw.AsSlice()) {
				return fmt.Errorf("pod route for %v family = %+v, %v; want via %v", gw, routes, err, gw)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

func epHasAddr(addrs []netlink.Addr, want netip.Addr) bool {
	for _, a := range addrs {
		if p, ok := epPrefix(a.IPNet); ok && p.Addr() == want && p.Bits() == want.BitLen() {
			return true
		}
	}
	return false
}

func epAddrOf(a net.Addr) netip.Addr {
	if ia, ok := a.(*net.IPAddr); ok {
		ip, _ := netip.AddrFromSlice(ia.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// epListenTCP listens on addr:0 in ep's netns and echoes one 4-byte message
// per connection; it reports peers on the returned listener's channel.
func epListenTCP(t *testing.T, m *EndpointManager, ep policy.Endpoint, addr netip.Addr) net.Listener {
	t.Helper()
	var ln net.Listener
	err := m.Do(ep, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ep.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(epIOTimeout))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(c, buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	return ln
}

// epTCPExchange connects from src's netns to dst in dstEp's netns, sends a
// message and reads the echo; it returns the source address the server saw.
func epTCPExchange(t *testing.T, m *EndpointManager, src, dstEp policy.Endpoint, dst netip.Addr) netip.Addr {
	t.Helper()
	var (
		ln    net.Listener
		peerc = make(chan netip.Addr, 1)
	)
	err := m.Do(dstEp, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(dst, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", dstEp.Name, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		peerc <- epAddrOf(c.RemoteAddr())
		_ = c.SetDeadline(time.Now().Add(epIOTimeout))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf)
		}
	}()
	var conn net.Conn
	err = m.Do(src, func() (err error) {
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), epIOTimeout)
		return err
	})
	if err != nil {
		t.Fatalf("dial %v from %s: %v", ln.Addr(), src.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(epIOTimeout))
	if _, err := conn.Write([]byte("moat")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "moat" {
		t.Fatalf("read echo = %q, %v", buf, err)
	}
	return <-peerc
}

func epUDPExchange(t *testing.T, m *EndpointManager, src, dstEp policy.Endpoint, dst netip.Addr) {
	t.Helper()
	var srv net.PacketConn
	err := m.Do(dstEp, func() (err error) {
		srv, err = net.ListenPacket("udp", netip.AddrPortFrom(dst, 0).String())
		return err
	})
	if err != nil {
		t.Fatalf("listen udp in %s: %v", dstEp.Name, err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 64)
		_ = srv.SetDeadline(time.Now().Add(epIOTimeout))
		n, from, err := srv.ReadFrom(buf)
		if err == nil {
			_, _ = srv.WriteTo(buf[:n], from)
		}
	}()
	var conn net.Conn
	err = m.Do(src, func() (err error) {
		conn, err = net.Dial("udp", srv.LocalAddr().String())
		return err
	})
	if err != nil {
		t.Fatalf("dial udp from %s: %v", src.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(epIOTimeout))
	if _, err := conn.Write([]byte("moat-udp")); err != nil {
		t.Fatalf("write udp: %v", err)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "moat-udp" {
		t.Fatalf("read udp echo = %q, %v", buf[:n], err)
	}
}

// epPing sends one ICMP echo request from src (inside ep's netns) to dst over
// a raw socket and waits for the matching reply.
func epPing(t *testing.T, m *EndpointManager, ep policy.Endpoint, src, dst netip.Addr) {
	t.Helper()
	network, reqType, replyType := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, reqType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	var pc net.PacketConn
	err := m.Do(ep, func() (err error) {
		pc, err = net.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		t.Fatalf("open %s socket in %s: %v", network, ep.Name, err)
	}
	defer pc.Close()
	id := uint16(os.Getpid())
	seq := uint16(dst.As16()[15])
	msg := []byte{reqType, 0, 0, 0, 0, 0, 0, 0, 'm', 'o', 'a', 't'}
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	if dst.Is4() { // the kernel computes the ICMPv6 checksum itself
		binary.BigEndian.PutUint16(msg[2:], epChecksum(msg))
	}
	_ = pc.SetDeadline(time.Now().Add(epIOTimeout))
	if _, err := pc.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatalf("send echo request to %v: %v", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("ping %v from %v: no reply: %v", dst, src, err)
		}
		if n >= 8 && buf[0] == replyType && epAddrOf(from) == dst &&
			binary.BigEndian.Uint16(buf[4:]) == id && binary.BigEndian.Uint16(buf[6:]) == seq {
			return
		}
	}
}

func epChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func TestPrivilegedEndpointAdoptAndRemove(t *testing.T) {
	env := newEpTestEnv(t)
	ctx := t.Context()
	a := epTestEndpoint("a", "10.200.3.1", "")
	b := epTestEndpoint("b", "10.200.3.2", "")

	first := env.manager(t)
	want := map[string]EndpointLink{}
	for _, ep := range []policy.Endpoint{a, b} {
		link, err := first.Ensure(ctx, ep)
		if err != nil {
			t.Fatalf("Ensure(%s): %v", ep.Name, err)
		}
		want[ep.Name] = link
	}
	_ = first.Close()

	// A restarted agent: a new manager finds what the first one built.
	m := env.manager(t)
	listed, err := m.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(listed) != 2 {
		t.Fatalf("List = %+v, want endpoints a and b", listed)
	}
	for _, got := range listed {
		w := want[got.Name]
		if got.HostIfindex != w.HostIfindex || got.PodIfindex != w.PodIfindex || got.Netns != w.Netns ||
			got.IPv4 != w.IPv4 || got.Namespace != w.Namespace || got.MAC.String() != w.MAC.String() || got.Adopted {
			t.Errorf("List entry %+v, want %+v", got, w)
		}
		again, err := m.Ensure(ctx, got.Endpoint())
		if err != nil {
			t.Fatalf("Ensure after restart(%s): %v", got.Name, err)
		}
		if again.HostIfindex != w.HostIfindex || again.PodIfindex != w.PodIfindex {
			t.Errorf("Ensure after restart rebuilt %s: %+v, was %+v", got.Name, again, w)
		}
	}
	epTCPExchange(t, m, a, b, b.IPv4)

	t.Run("adopt existing veth", func(t *testing.T) {
		// Someone else's veth, peer in their own netns, pod side set up by hand.
		userNs := filepath.Join(env.cfg.NetnsDir, strings.TrimSuffix(env.cfg.NetnsPrefix, "-")+"_user")
		if err := netnsCreate(userNs); err != nil {
			t.Fatalf("create user netns: %v", err)
		}
		u := policy.Endpoint{Namespace: "test", Name: "user", IPv4: netip.MustParseAddr("10.200.3.9"), Interface: "uveth0"}
		podNs, err := netns.GetFromPath(userNs)
		if err != nil {
			t.Fatal(err)
		}
		defer podNs.Close()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: u.Interface}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNs))}
		if err := env.host.LinkAdd(veth); err != nil {
			t.Fatalf("add user veth: %v", err)
		}
		err = netnsDo(userNs, func() error {
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: epIPNet(netip.PrefixFrom(u.IPv4, 32))}); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(eth0); err != nil {
				return err
			}
			return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: env.cfg.GatewayIPv4.AsSlice(),
				Flags: int(netlink.FLAG_ONLINK)})
		})
		if err != nil {
			t.Fatalf("configure user pod: %v", err)
		}

		link, err := m.Ensure(ctx, u)
		if err != nil {
			t.Fatalf("Ensure(adopted): %v", err)
		}
		if !link.Adopted || link.HostIfname != u.Interface || link.Netns != userNs || link.PodIfindex == 0 || link.IPv4 != u.IPv4 {
			t.Fatalf("adopted EndpointLink = %+v", link)
		}
		// Traffic from the adopted pod to a created one.
		var conn net.Conn
		srv := epListenTCP(t, m, b, b.IPv4)
		err = netnsDo(userNs, func() (err error) {
			conn, err = net.DialTimeout("tcp", srv.Addr().String(), epIOTimeout)
			return err
		})
		if err != nil {
			t.Fatalf("dial from adopted pod: %v", err)
		}
		conn.Close()
		if got, err := m.List(ctx); err != nil || len(got) != 3 {
			t.Fatalf("List with adopted = %+v, %v; want 3", got, err)
		}

		if err := m.Remove(ctx, u); err != nil {
			t.Fatalf("Remove(adopted): %v", err)
		}
		hl, err := env.host.LinkByName(u.Interface)
		if err != nil {
			t.Fatalf("Remove deleted the adopted link: %v", err)
		}
		if hl.Attrs().Alias != "" {
			t.Errorf("adopted link keeps alias %q", hl.Attrs().Alias)
		}
		addrs, _ := env.host.AddrList(hl, netlink.FAMILY_ALL)
		if epHasAddr(addrs, env.cfg.GatewayIPv4) {
			t.Errorf("adopted link keeps the gateway address: %v", addrs)
		}
		epCheckNoRoute(t, env, u.IPv4)
	})

	if err := m.Remove(ctx, a); err != nil {
		t.Fatalf("Remove(a): %v", err)
	}
	if _, err := os.Stat(want["a"].Netns); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns file %s after Remove: %v", want["a"].Netns, err)
	}
	if _, err := env.host.LinkByName(want["a"].HostIfname); err == nil {
		t.Errorf("link %s still exists after Remove", want["a"].HostIfname)
	}
	epCheckNoRoute(t, env, a.IPv4)
	if err := m.Remove(ctx, a); err != nil {
		t.Errorf("second Remove(a): %v", err)
	}
	if got, err := m.List(ctx); err != nil || len(got) != 1 || got[0].Name != "b" {
		t.Errorf("List after Remove(a) = %+v, %v; want only b", got, err)
	}

	t.Run("prune", func(t *testing.T) {
		c := epTestEndpoint("c", "10.200.3.3", "")
		if _, err := m.Ensure(ctx, c); err != nil {
			t.Fatalf("Ensure(c): %v", err)
		}
		// c's host veth is lost while the agent is down: only its netns is left.
		if err := env.host.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: m.HostIfname(c)}}); err != nil {
			t.Fatal(err)
		}
		// A netns of a different manager (other prefix) is never touched.
		other := env.cfg
		other.NetnsPrefix += "x-"
		om, err := NewEndpointManager(other, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer om.Close()
		d := epTestEndpoint("d", "10.200.3.4", "")
		if _, err := om.Ensure(ctx, d); err != nil {
			t.Fatalf("other manager Ensure(d): %v", err)
		}

		removed, err := m.Prune(ctx, []policy.Endpoint{b})
		if err != nil {
			t.Fatalf("Prune: %v", err)
		}
		if len(removed) != 1 || removed[0].Name != "c" {
			t.Errorf("Prune removed %+v, want only c's netns", removed)
		}
		if _, err := os.Stat(m.NetnsPath(c)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns of c after Prune: %v", err)
		}
		if got, err := m.List(ctx); err != nil || len(got) != 1 || got[0].Name != "b" {
			t.Errorf("List after Prune = %+v, %v; want only b", got, err)
		}
		if got, err := om.List(ctx); err != nil || len(got) != 1 || got[0].Name != "d" {
			t.Errorf("other manager's List after Prune = %+v, %v; want d", got, err)
		}
		if _, err := m.Prune(ctx, nil); err != nil {
			t.Fatalf("Prune(nil): %v", err)
		}
		if got, err := m.List(ctx); err != nil || len(got) != 0 {
			t.Errorf("List after Prune(nil) = %+v, %v; want none", got, err)
		}
		if _, err := os.Stat(m.NetnsPath(b)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns of b after Prune(nil): %v", err)
		}
		if ok, _ := netnsIsMounted(om.NetnsPath(d)); !ok {
			t.Errorf("Prune removed the other manager's netns %s", om.NetnsPath(d))
		}
	})
}

func epCheckNoRoute(t *testing.T, env *epTestEnv, a netip.Addr) {
	t.Helper()
	routes, err := env.host.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Dst: epIPNet(netip.PrefixFrom(a, a.BitLen())), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatalf("list routes: %v", err)
	}
	if len(routes) != 0 {
		t.Errorf("routes to %v left behind: %+v", a, routes)
	}
}

func TestPrivilegedEndpointRepair(t *testing.T) {
	env := newEpTestEnv(t)
	m := env.manager(t)
	ctx := t.Context()
	a := epTestEndpoint("a", "10.200.4.1", "")
	b := epTestEndpoint("b", "10.200.4.2", "")
	for _, ep := range []policy.Endpoint{a, b} {
		if _, err := m.Ensure(ctx, ep); err != nil {
			t.Fatalf("Ensure(%s): %v", ep.Name, err)
		}
	}
	// The host veth vanishes (and with it the pod side): Ensure rebuilds it.
	hl, err := env.host.LinkByName(m.HostIfname(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.host.LinkDel(hl); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Ensure(ctx, a); err != nil {
		t.Fatalf("Ensure after link loss: %v", err)
	}
	epTCPExchange(t, m, a, b, b.IPv4)

	// The endpoint's address changes: the old one leaves both sides.
	moved := a
	moved.IPv4 = netip.MustParseAddr("10.200.4.11")
	link, err := m.Ensure(ctx, moved)
	if err != nil {
		t.Fatalf("Ensure with new address: %v", err)
	}
	epCheckNoRoute(t, env, a.IPv4)
	if link.IPv4 != moved.IPv4 {
		t.Errorf("EndpointLink.IPv4 = %v, want %v", link.IPv4, moved.IPv4)
	}
	err = m.Do(moved, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || !epHasAddr(addrs, moved.IPv4) {
			return fmt.Errorf("pod addresses %v, want only %v", addrs, moved.IPv4)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	epTCPExchange(t, m, moved, b, b.IPv4)

	// "x-y"/"z" and "x"/"y-z" share a netns name: the second must fail, not
	// move into the first one's pod.
	first := policy.Endpoint{Namespace: "x-y", Name: "z", IPv4: netip.MustParseAddr("10.200.4.21")}
	second := policy.Endpoint{Namespace: "x", Name: "y-z", IPv4: netip.MustParseAddr("10.200.4.22")}
	if m.NetnsPath(first) != m.NetnsPath(second) {
		t.Fatalf("test premise: %s != %s", m.NetnsPath(first), m.NetnsPath(second))
	}
	if _, err := m.Ensure(ctx, first); err != nil {
		t.Fatalf("Ensure(%v): %v", first, err)
	}
	if _, err := m.Ensure(ctx, second); err == nil || !strings.Contains(err.Error(), "already belongs") {
		t.Fatalf("Ensure of a colliding endpoint = %v, want an ownership error", err)
	}
}

func TestPrivilegedEndpointProxyRouting(t *testing.T) {
	env := newEpTestEnv(t)
	m := env.manager(t)
	ctx := t.Context()
	for i := range 2 {
		if err := m.EnsureProxyRouting(ctx); err != nil {
			t.Fatalf("EnsureProxyRouting #%d: %v", i+1, err)
		}
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := m.proxyRules(family)
		if err != nil || len(rules) != 1 {
			t.Fatalf("family %d: proxy rules = %+v, %v; want exactly one", family, rules, err)
		}
		routes, err := env.host.RouteListFiltered(family, &netlink.Route{Table: env.cfg.RouteTableProxy}, netlink.RT_FILTER_TABLE)
		if err != nil || len(routes) != 1 || routes[0].Type != unix.RTN_LOCAL {
			t.Fatalf("family %d: table %d = %+v, %v; want one local default route", family, env.cfg.RouteTableProxy, routes, err)
		}
	}
	if ok, err := m.ProxyRoutingInstalled(); err != nil || !ok {
		t.Fatalf("ProxyRoutingInstalled = %v, %v; want true", ok, err)
	}
	// A marked packet to any address is delivered locally.
	for _, dst := range []string{"192.0.2.7", "2001:db8::7"} {
		routes, err := env.host.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{Mark: 0x200 | 15001<<16})
		if err != nil || len(routes) != 1 || routes[0].Type != unix.RTN_LOCAL {
			t.Errorf("route for marked packet to %s = %+v, %v; want local", dst, routes, err)
		}
	}
	for i := range 2 {
		if err := m.RemoveProxyRouting(ctx); err != nil {
			t.Fatalf("RemoveProxyRouting #%d: %v", i+1, err)
		}
	}
	if ok, err := m.ProxyRoutingInstalled(); err != nil || ok {
		t.Fatalf("ProxyRoutingInstalled after removal = %v, %v; want false", ok, err)
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if rules, _ := m.proxyRules(family); len(rules) != 0 {
			t.Errorf("family %d: rules left: %+v", family, rules)
		}
		if routes, _ := env.host.RouteListFiltered(family, &netlink.Route{Table: env.cfg.RouteTableProxy}, netlink.RT_FILTER_TABLE); len(routes) != 0 {
			t.Errorf("family %d: routes left in table %d: %+v", family, env.cfg.RouteTableProxy, routes)
		}
	}
}
