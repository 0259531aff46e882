package dnsproxy

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestIPv6Loopback runs allowed and denied queries over UDP and TCP on
// ::1, the proxy forwarding to an upstream on ::1.
func TestIPv6Loopback(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		// CI's machines have ::1: there a missing one is a failure.
		if os.Getenv(testutil.PrivilegedEnv) == "1" {
			t.Fatalf("no IPv6 loopback (%s=1, so this must not skip): %v", testutil.PrivilegedEnv, err)
		}
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		c.Close()
	}
	up := startUpstreamAt(t, "::1")
	up.setZone("www.allowed.test.", []string{"192.0.2.10"})
	p, err := New(Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")},
		StaticDestination: up.addr,
		Endpoints: EndpointsFunc(func(ip netip.Addr) (EndpointInfo, bool) {
			return testEndpoint, ip == netip.IPv6Loopback()
		}),
		Remotes: RemotesFunc(func(netip.Addr) policy.ID { return testDNSID }),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetPolicy(testPolicy()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithCancel(t)
	if err := p.Bind(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	udp, tcp := p.Addrs()
	for _, tc := range []struct {
		netw string
		addr netip.AddrPort
	}{{"udp", udp[0]}, {"tcp", tcp[0]}} {
		c := &dns.Client{Net: tc.netw, Timeout: 5 * time.Second}
		r, _, err := c.Exchange(mkQuery("www.allowed.test.", dns.TypeA), tc.addr.String())
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Errorf("%s allowed: %v, %v", tc.netw, r, err)
		}
		r, _, err = c.Exchange(mkQuery("evil.test.", dns.TypeA), tc.addr.String())
		if err != nil || r.Rcode != dns.RcodeRefused {
			t.Errorf("%s denied: %v, %v", tc.netw, r, err)
		}
	}
	for _, s := range up.queries() {
		if !s.remote.Addr().Is6() {
			t.Errorf("upstream saw a query from %s, want ::1", s.remote)
		}
	}
	if n := len(up.queries()); n != 2 {
		t.Errorf("upstream saw %d queries, want 2", n)
	}
}

// TestOrigDstControlMessages parses IP_ORIGDSTADDR and IPV6_ORIGDSTADDR
// control messages as the kernel lays them out.
func TestOrigDstControlMessages(t *testing.T) {
	cmsg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, unix.CmsgSpace(len(data)))
		h := (*unix.Cmsghdr)(unsafePointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(len(data)))
		copy(b[unix.CmsgLen(0):], data)
		return b
	}
	v4 := make([]byte, unix.SizeofSockaddrInet4)
	binary.LittleEndian.PutUint16(v4, unix.AF_INET)
	binary.BigEndian.PutUint16(v4[2:], 53)
	copy(v4[4:], []byte{10, 96, 0, 10})
	v6 := make([]byte, unix.SizeofSockaddrInet6)
	binary.LittleEndian.PutUint16(v6, unix.AF_INET6)
	binary.BigEndian.PutUint16(v6[2:], 5353)
	a6 := netip.MustParseAddr("fd00::a").As16()
	copy(v6[8:], a6[:])
	for _, tc := range []struct {
		name string
		oob  []byte
		want netip.AddrPort
		ok   bool
	}{
		{"ipv4", cmsg(unix.SOL_IP, unix.IP_ORIGDSTADDR, v4), netip.MustParseAddrPort("10.96.0.10:53"), true},
		{"ipv6", cmsg(unix.SOL_IPV6, unix.IPV6_ORIGDSTADDR, v6), netip.MustParseAddrPort("[fd00::a]:5353"), true},
		{"other message first", append(cmsg(unix.SOL_IP, unix.IP_TTL, []byte{64, 0, 0, 0}), cmsg(unix.SOL_IP, unix.IP_ORIGDSTADDR, v4)...), netip.MustParseAddrPort("10.96.0.10:53"), true},
		{"short data", cmsg(unix.SOL_IP, unix.IP_ORIGDSTADDR, v4[:6]), netip.AddrPort{}, false},
		{"none", nil, netip.AddrPort{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := origDst(tc.oob)
			if ok != tc.ok || got != tc.want {
				t.Errorf("origDst = %s, %v; want %s, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
