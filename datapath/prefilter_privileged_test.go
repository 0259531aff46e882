package datapath

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
)

// prefilterPod is a pod with a UDP socket towards a host-side listener.
type prefilterPod struct {
	pod  *testutil.Pod
	host *net.UDPConn // listening on the gateway address, host netns
	conn *net.UDPConn // pod netns, connected to host
}

func newPrefilterPod(t *testing.T, addr, gw string) *prefilterPod {
	t.Helper()
	pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr(addr), Gateway: netip.MustParseAddr(gw)})
	host, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pod.Gateway, 0)))
	if err != nil {
		t.Fatalf("listen on gateway: %v", err)
	}
	t.Cleanup(func() { host.Close() })
	var conn *net.UDPConn
	err = pod.Do(func() (err error) {
		conn, err = net.DialUDP("udp", nil, host.LocalAddr().(*net.UDPAddr))
		return err
	})
	if err != nil {
		t.Fatalf("dial from pod: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return &prefilterPod{pod: pod, host: host, conn: conn}
}

func (pp *prefilterPod) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := pp.conn.Write([]byte(msg)); err != nil {
		t.Fatalf("send from pod: %v", err)
	}
}

// expect reads the next datagram and wants it to be msg.
func (pp *prefilterPod) expect(t *testing.T, msg string) {
	t.Helper()
	buf := make([]byte, 64)
	_ = pp.host.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pp.host.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("receive %q: %v", msg, err)
	}
	if got := string(buf[:n]); got != msg {
		t.Fatalf("received %q, want %q", got, msg)
	}
}

// expectNothing checks that no datagram is queued.
func (pp *prefilterPod) expectNothing(t *testing.T) {
	t.Helper()
	buf := make([]byte, 64)
	_ = pp.host.SetReadDeadline(time.Now())
	n, _, err := pp.host.ReadFromUDPAddrPort(buf)
	if err == nil {
		t.Fatalf("received %q, want it dropped", buf[:n])
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v", err)
	}
}

// waitDropped polls until the prefix has counted at least n drops.
func waitDropped(t *testing.T, p *Prefilter, pfx netip.Prefix, n uint64) PrefilterCounters {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := p.Counters()
		if err != nil {
			t.Fatalf("counters: %v", err)
		}
		if c.PerPrefix[pfx].Packets >= n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefix %s: %d drops after 10s, want %d (counters %+v)", pfx, c.PerPrefix[pfx].Packets, n, c)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestPrivilegedPrefilter(t *testing.T) {
	testutil.Privileged(t)
	cases := []struct {
		name     string
		mode     XDPMode
		addr, gw string
		deny     netip.Prefix
		other    netip.Prefix
	}{
		{"ipv4-native", XDPNative, "10.209.3.1", "10.209.255.254", netip.MustParsePrefix("10.209.3.0/24"), netip.MustParsePrefix("192.0.2.0/24")},
		{"ipv4-generic", XDPGeneric, "10.209.4.1", "10.209.255.254", netip.MustParsePrefix("10.209.4.1/32"), netip.MustParsePrefix("198.51.100.0/24")},
		{"ipv6-auto", XDPAuto, "fd00:209::4:1", "fd00:209::ffff", netip.MustParsePrefix("fd00:209::4:0/112"), netip.MustParsePrefix("2001:db8::/32")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := testPinRoot(t)
			t.Cleanup(func() { _ = os.RemoveAll(root) })
			pp := newPrefilterPod(t, tc.addr, tc.gw)
			p, err := OpenPrefilter(PrefilterConfig{PinRoot: root})
			testutil.Require(t, "prefilter load", err)
			t.Cleanup(func() {
				if err := CleanupPrefilter(PrefilterConfig{PinRoot: root}); err != nil {
					t.Errorf("cleanup prefilter: %v", err)
				}
			})
			defer func() { p.Close() }()
			testutil.Require(t, "xdp attach "+string(tc.mode), p.Attach(pp.pod.HostIfIndex, tc.mode))

			// Empty deny list: traffic passes.
			pp.send(t, "a")
			pp.expect(t, "a")

			// Denied source: dropped and counted.
			if err := p.SetDenyList([]netip.Prefix{tc.deny, tc.other}); err != nil {
				t.Fatalf("set deny list: %v", err)
			}
			for range 5 {
				pp.send(t, "b")
			}
			c := waitDropped(t, p, tc.deny, 5)
			pp.expectNothing(t)
			if c.Total.Packets < 5 || c.Total.Bytes == 0 || c.PerPrefix[tc.other].Packets != 0 {
				t.Errorf("counters: %+v", c)
			}

			// Updated list: the source passes again; its counters go.
			if err := p.SetDenyList([]netip.Prefix{tc.other}); err != nil {
				t.Fatalf("set deny list: %v", err)
			}
			pp.send(t, "c")
			pp.expect(t, "c")
			c, err = p.Counters()
			if err != nil {
				t.Fatalf("counters: %v", err)
			}
			if _, ok := c.PerPrefix[tc.deny]; ok || c.Total.Packets < 5 {
				t.Errorf("counters after removal: %+v", c)
			}

			// Restart: the link and the list survive; a new list applies.
			if err := p.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			p, err = OpenPrefilter(PrefilterConfig{PinRoot: root})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if got := p.Attached(); !slices.Equal(got, []int{pp.pod.HostIfIndex}) {
				t.Errorf("adopted %v, want [%d]", got, pp.pod.HostIfIndex)
			}
			if got, err := p.DenyList(); err != nil || !slices.Equal(got, []netip.Prefix{tc.other}) {
				t.Errorf("deny list after restart: %v, %v", got, err)
			}
			if err := p.SetDenyList([]netip.Prefix{tc.deny}); err != nil {
				t.Fatalf("set deny list: %v", err)
			}
			pp.send(t, "d")
			waitDropped(t, p, tc.deny, 1)
			pp.expectNothing(t)

			// Cleanup detaches.
			if err := p.Cleanup(); err != nil {
				t.Fatalf("cleanup: %v", err)
			}
			entries, _ := os.ReadDir(filepath.Join(root, "links"))
			if len(entries) != 0 {
				t.Errorf("links left: %v", entries)
			}
			if out := testutil.RunCmd(t, "ip", "link", "show", pp.pod.HostIf); strings.Contains(out, "xdp") {
				t.Errorf("xdp still attached:\n%s", out)
			}
			pp.send(t, "e")
			pp.expect(t, "e")
		})
	}
}
