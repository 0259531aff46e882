package datapath

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// An upstream leg of the proxy to a server outside the node keeps the
// client's address too: the server's replies, addressed to the client pod,
// arrive on an uplink, whose from_uplink hands them to the proxy's socket.

// uplinkWorld is a netns outside the node, reached from the scratch host
// netns over a veth (the uplink): the server's address and a default route
// back through the host, for IPv4 and IPv6.
type uplinkWorld struct {
	ns      string // netns path
	ifindex int    // the uplink's index in the scratch host netns
	v4, v6  netip.Addr
}

func newUplinkWorld(t *testing.T, e *redirectEnv) *uplinkWorld {
	t.Helper()
	host := filepath.Base(e.m.cfg.HostNetns)
	name := e.m.cfg.NetnsPrefix + "world" // removed with the scratch netns
	w := &uplinkWorld{
		ns: filepath.Join(e.m.cfg.NetnsDir, name),
		v4: netip.MustParseAddr("198.51.100.77"),
		v6: netip.MustParseAddr("2001:db8:51::77"),
	}
	testutil.Require(t, "world netns", netnsCreate(w.ns))
	for _, args := range [][]string{
		{"-n", host, "link", "add", "mtupl", "type", "veth", "peer", "name", "eth0", "netns", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "addr", "add", "198.51.100.77/24", "dev", "eth0"},
		{"-n", name, "addr", "add", "2001:db8:51::77/64", "dev", "eth0", "nodad"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "route", "add", "default", "via", "198.51.100.1"},
		{"-n", name, "-6", "route", "add", "default", "via", "2001:db8:51::1"},
		{"-n", host, "addr", "add", "198.51.100.1/24", "dev", "mtupl"},
		{"-n", host, "addr", "add", "2001:db8:51::1/64", "dev", "mtupl", "nodad"},
		{"-n", host, "link", "set", "mtupl", "up"},
	} {
		testutil.RunCmd(t, "ip", args...)
	}
	// The pods' own flows to the world are forwarded (the negative
	// controls below need it).
	testutil.Require(t, "forwarding on the uplink", e.m.DoHost(func() error {
		if err := epWriteSysctl("net/ipv4/conf/mtupl/forwarding", "1"); err != nil {
			return err
		}
		return epWriteSysctl("net/ipv6/conf/mtupl/force_forwarding", "1")
	}))
	out := testutil.RunCmd(t, "ip", "-n", host, "-o", "link", "show", "mtupl")
	idx, _, _ := strings.Cut(out, ":")
	var err error
	if w.ifindex, err = strconv.Atoi(strings.TrimSpace(idx)); err != nil || w.ifindex <= 0 {
		t.Fatalf("uplink ifindex from %q: %v", out, err)
	}
	return w
}

// listen opens a TCP echo server on addr in the world netns.
func (w *uplinkWorld) listen(t *testing.T, addr netip.Addr) *echoListener {
	t.Helper()
	var ln net.Listener
	err := netnsDo(w.ns, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	})
	testutil.Require(t, "world listener", err)
	return serveEcho(t, ln)
}

// TestPrivilegedUplinkReturnsProxyReplies: a proxy upstream socket bound to
// the client pod's address reaches a server outside the node, the server
// sees the pod's address, and the replies reach the proxy's socket only
// while from_uplink is on the uplink; a socket without the from-proxy mark
// never gets them, and the pod's own flows to the world pass untouched.
func TestPrivilegedUplinkReturnsProxyReplies(t *testing.T) {
	e := newRedirectEnv(t, 9)
	w := newUplinkWorld(t, e)
	setUplinks := func(idx ...int) {
		t.Helper()
		testutil.Require(t, "set uplinks", e.m.DoHost(func() error { return e.d.SetUplinks(idx) }))
	}
	const short = 1500 * time.Millisecond
	mark := mustProxyMark(t, policy.Egress, e.idA)

	for _, fam := range []struct {
		name          string
		client, world netip.Addr
		network       string
	}{
		{"ipv4", e.a.IPv4, w.v4, "tcp4"},
		{"ipv6", e.a.IPv6, w.v6, "tcp6"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			srv := w.listen(t, fam.world)
			dst := netip.AddrPortFrom(fam.world, srv.port)

			// Positive control: the pod's own connection to the world.
			var own net.Conn
			err := e.m.Do(e.a, func() (err error) {
				own, err = net.DialTimeout(fam.network, dst.String(), rdTimeout)
				return err
			})
			if err != nil {
				t.Fatalf("pod a's own connection to %v: %v", dst, err)
			}
			if got := srv.next(t, "world server, a's own"); got.remote.Addr() != fam.client {
				t.Errorf("world server saw a's own connection from %v, want %v", got.remote, fam.client)
			}

			// Without from_uplink the replies do not reach the proxy.
			setUplinks()
			if up, err := e.dialTransparent(fam.client, dst, mark, short); err == nil {
				up.Close()
				t.Fatalf("upstream from the client's address connected without from_uplink: the test proves nothing")
			}
			srv.drain()

			setUplinks(w.ifindex)
			if got := e.d.Uplinks(); !slices.Equal(got, []int{w.ifindex}) {
				t.Errorf("Uplinks() = %v, want [%d]", got, w.ifindex)
			}
			up, err := e.dialTransparent(fam.client, dst, mark, rdTimeout)
			if err != nil {
				t.Fatalf("upstream from the client's address %v to %v with from_uplink: %v", fam.client, dst, err)
			}
			defer up.Close()
			if got := srv.next(t, "world server, upstream"); got.remote != addrPortOf(up.LocalAddr()) || got.remote.Addr() != fam.client {
				t.Errorf("world server sees the upstream from %v, want the client's address %v (socket %v)", got.remote, fam.client, up.LocalAddr())
			}
			if err := roundTrip(up, "upstream reply through the uplink"); err != nil {
				t.Fatalf("upstream exchange (replies must reach the proxy's socket): %v", err)
			}
			// The pod's own flow still works: its replies were not taken.
			if err := roundTrip(own, "pod's own flow beside from_uplink"); err != nil {
				t.Errorf("pod a's own connection with from_uplink attached: %v", err)
			}
			own.Close()

			// A transparent socket without a from-proxy mark is not a
			// proxy's: its replies go on to the pod, never to it.
			if c, err := e.dialTransparent(fam.client, dst, 0, short); err == nil {
				c.Close()
				t.Errorf("an unmarked socket on the client's address got the replies from the uplink")
			}
			srv.drain()
		})
	}
	// A restarted agent's datapath adopts the pinned uplink link and swaps
	// its program in place: the replies keep reaching the proxy.
	t.Run("adopted after restart", func(t *testing.T) {
		setUplinks(w.ifindex)
		d2 := openTestDatapath(t, e.d.Config().PinRoot)
		defer d2.Close()
		if got := d2.Uplinks(); !slices.Equal(got, []int{w.ifindex}) {
			t.Fatalf("restarted datapath Uplinks() = %v, want [%d] (adopted)", got, w.ifindex)
		}
		srv := w.listen(t, w.v4)
		up, err := e.dialTransparent(e.a.IPv4, netip.AddrPortFrom(w.v4, srv.port), mark, rdTimeout)
		if err != nil {
			t.Fatalf("upstream through the adopted uplink link: %v", err)
		}
		defer up.Close()
		if err := roundTrip(up, "after restart"); err != nil {
			t.Errorf("upstream exchange through the adopted uplink link: %v", err)
		}
	})
	setUplinks()
	if got := e.d.Uplinks(); len(got) != 0 {
		t.Errorf("Uplinks() after SetUplinks(nil) = %v, want none", got)
	}
	// An endpoint's veth is refused as an uplink.
	err := e.m.DoHost(func() error { return e.d.SetUplinks([]int{e.la.HostIfindex}) })
	if err == nil || !strings.Contains(err.Error(), "is an endpoint's veth") {
		t.Errorf("SetUplinks(endpoint veth) = %v, want an error naming the endpoint's veth", err)
	}
}

// drain forgets the connections the listener accepted so far.
func (s *echoListener) drain() {
	for {
		select {
		case <-s.conns:
		default:
			return
		}
	}
}
