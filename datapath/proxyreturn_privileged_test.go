package datapath

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/policy"
)

// The proxy's upstream leg keeps the client's address: the proxy dials the
// server from a transparent socket bound to the client's address, the
// server sees the client, and its replies, addressed to the client, reach
// the proxy's socket in the host netns instead of the client pod.

// dialTransparent connects from the scratch host netns to dst from a
// transparent socket bound to src (port 0) that carries mark, like the
// proxy's upstream connections.
func (e *redirectEnv) dialTransparent(src netip.Addr, dst netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{
		Timeout:   timeout,
		LocalAddr: &net.TCPAddr{IP: src.AsSlice()},
		Control: func(network, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
				if network == "tcp6" {
					serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1))
				} else {
					serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1))
				}
			})
			return errors.Join(err, serr)
		},
	}
	var c net.Conn
	err := e.m.DoHost(func() (err error) {
		c, err = d.Dial("tcp", dst.String())
		return err
	})
	return c, err
}

func TestPrivilegedProxyUpstreamKeepsClientAddress(t *testing.T) {
	e := newRedirectEnv(t, 7)
	for _, rc := range redirectCases {
		for _, fam := range []struct {
			name   string
			client netip.Addr
			server netip.Addr
		}{
			{"ipv4", e.a.IPv4, e.b.IPv4},
			{"ipv6", e.a.IPv6, e.b.IPv6},
		} {
			t.Run(rc.name+"/"+fam.name, func(t *testing.T) {
				srv := e.listenPodAddr(t, e.b, fam.server)
				proxy := e.listenTransparent(t)
				e.sync(t)(rc.plan(e, srv.port, proxy.port))
				dst := netip.AddrPortFrom(fam.server, srv.port)

				// Egress: the mark carries the client's identity; ingress:
				// it carries 0, like Envoy's ingress cluster, and the
				// ipcache names the client's address.
				mark := mustProxyMark(t, rc.dir, e.idA)
				if rc.dir == policy.Ingress {
					mark = mustProxyMark(t, rc.dir, policy.IDUnknown)
				}
				up, err := e.dialTransparent(fam.client, dst, mark, rdTimeout)
				if err != nil {
					t.Fatalf("upstream dial %v from the client's address %v: %v", dst, fam.client, err)
				}
				defer up.Close()
				got := srv.next(t, "b's server")
				if want := addrPortOf(up.LocalAddr()); got.remote != want || got.remote.Addr() != fam.client {
					t.Errorf("b's server sees peer %v, want the client's address %v (socket %v)", got.remote, fam.client, want)
				}
				if err := roundTrip(up, "upstream from the client's address"); err != nil {
					t.Fatalf("upstream exchange (replies must reach the proxy's socket, not the client pod): %v", err)
				}
				ev := e.events.waitFor(t, "verdict of the upstream", func(ev Event) bool {
					return ev.Kind == EventVerdict && ev.Endpoint == uint32(e.lb.HostIfindex) && ev.Dst == dst && ev.FromProxy
				})
				if ev.Src != got.remote || ev.Direction != policy.Ingress || ev.Verdict != policy.VerdictAllow {
					t.Errorf("upstream verdict event = %+v, want allow of %v at b's ingress", ev, got.remote)
				}
				if ev.SrcIdentity != e.idA {
					t.Errorf("upstream verdict source identity %d, want the client's %d", ev.SrcIdentity, e.idA)
				}
				proxy.none(t, "proxy listener, for its own upstream")
			})
		}
	}
}
