package datapath

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// IPv6 fragments and extension headers: the first fragment (offset 0, also
// an atomic fragment) is policied by its real L4 header, a later one by the
// ports its first fragment left (or, when that was not seen, by the entries
// covering every port), and a header chain too long to follow is dropped as
// unsupported. Packets are hand-built and sent from pod a's eth0
// over an AF_PACKET socket; each case has its own length to find its event.

const (
	ip6NextFragment = 44
	ip6NextDstOpts  = 60
)

// ext is an IPv6 extension header of type typ; ip6Packet fills in its
// first byte (the next header).
type ext struct {
	typ byte
	hdr []byte
}

// ip6Packet builds an IPv6 packet src -> dst: the extension headers es, then
// payload as protocol proto.
func ip6Packet(src, dst netip.Addr, es []ext, proto byte, payload []byte) []byte {
	var body []byte
	next := proto
	for i := len(es) - 1; i >= 0; i-- {
		h := append([]byte(nil), es[i].hdr...)
		h[0] = next
		next = es[i].typ
		body = append(h, body...)
	}
	body = append(body, payload...)
	hdr := make([]byte, 40)
	hdr[0] = 0x60
	binary.BigEndian.PutUint16(hdr[4:], uint16(len(body)))
	hdr[6] = next
	hdr[7] = 64
	s, d := src.As16(), dst.As16()
	copy(hdr[8:], s[:])
	copy(hdr[24:], d[:])
	return append(hdr, body...)
}

// fragHdr is a fragment header (offset in 8-byte units, more fragments) of
// the datagram with identification id.
func fragHdr(offset uint16, more bool, id uint32) []byte {
	h := make([]byte, 8)
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	binary.BigEndian.PutUint32(h[4:], id)
	return h
}

// tcpSYN is a TCP SYN sport -> dport with its checksum for src -> dst.
func tcpSYN(src, dst netip.Addr, sport, dport uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], 0x01020304)
	h[12] = 5 << 4
	h[13] = 0x02
	binary.BigEndian.PutUint16(h[14:], 65535)
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	sum += uint32(len(h)) + 6
	add(h)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[16:], ^uint16(sum))
	return h
}

// sendFrame sends an IP packet of ethType (ETH_P_IP, ETH_P_IPV6) out of
// pod's eth0 to the host veth's MAC.
func sendFrame(pod *testutil.Pod, ethType uint16, pkt []byte) error {
	host, err := net.InterfaceByName(pod.HostIf)
	if err != nil {
		return fmt.Errorf("find host veth: %w", err)
	}
	return pod.Do(func() error {
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0: %w", err)
		}
		proto := ethType>>8 | ethType<<8 // network order
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Protocol: proto, Ifindex: eth0.Index, Halen: 6}
		copy(sa.Addr[:], host.HardwareAddr)
		if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
			return fmt.Errorf("send frame: %w", err)
		}
		return nil
	})
}

func TestPrivilegedIPv6Fragments(t *testing.T) {
	testutil.Privileged(t)
	a := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("fd00:211::1")})
	b := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("fd00:211::2")})
	for _, p := range []*testutil.Pod{a, b} {
		// Global IPv6 forwarding stays as it is: per-interface is enough.
		testutil.Require(t, "ipv6 force_forwarding (Linux 6.17+)",
			os.WriteFile("/proc/sys/net/ipv6/conf/"+p.HostIf+"/force_forwarding", []byte("1"), 0o644))
	}
	const idA, idB = policy.ID(1101), policy.ID(1102)
	var allowedLn, deniedLn net.Listener
	if err := b.Do(func() (err error) {
		if allowedLn, err = net.Listen("tcp6", "["+b.Addr.String()+"]:0"); err != nil {
			return err
		}
		deniedLn, err = net.Listen("tcp6", "["+b.Addr.String()+"]:0")
		return err
	}); err != nil {
		t.Fatalf("listen in b: %v", err)
	}
	t.Cleanup(func() { allowedLn.Close(); deniedLn.Close() })
	allowed := serveEcho(t, allowedLn)
	denied := uint16(deniedLn.Addr().(*net.TCPAddr).Port)

	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	events := collectEvents(t, d)
	ifaces := map[EndpointKey]int{{Namespace: "t", Name: "a"}: a.HostIfIndex, {Namespace: "t", Name: "b"}: b.HostIfIndex}
	plan := func(aEgress policy.DirectionPlan) *policy.Plan {
		return &policy.Plan{
			Endpoints: []policy.EndpointPlan{
				{Namespace: "t", Name: "a", Identity: idA, Addresses: []netip.Addr{a.Addr}, Egress: aEgress},
				{Namespace: "t", Name: "b", Identity: idB, Addresses: []netip.Addr{b.Addr}},
			},
			IPCache: []policy.IPCacheEntry{
				{Prefix: netip.PrefixFrom(a.Addr, 128), Identity: idA},
				{Prefix: netip.PrefixFrom(b.Addr, 128), Identity: idB},
			},
		}
	}
	// L3 allow of b plus a TCP deny on one port: the shape that let a
	// fragment header hide the deny.
	l3AllowPortDeny := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: idB, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
		tcpEntry(idB, denied, policy.VerdictDeny),
	}}
	portAllowOnly := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{tcpEntry(idB, allowed.port, policy.VerdictAllow)}}
	allTCPDeny := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: idB, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
		{L4Key: policy.L4Key{Identity: idB, Proto: policy.ProtoTCP}, Verdict: policy.VerdictDeny},
	}}
	if err := d.Sync(plan(l3AllowPortDeny), ifaces, nil); err != nil {
		t.Fatalf("sync: %v", err)
	}
	for _, idx := range []int{a.HostIfIndex, b.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatalf("attach: %v", err)
		}
	}

	t.Run("plain connection to the allowed port", func(t *testing.T) {
		var c net.Conn
		dst := netip.AddrPortFrom(b.Addr, allowed.port)
		if err := a.Do(func() (err error) {
			c, err = net.DialTimeout("tcp6", dst.String(), 2*time.Second)
			return err
		}); err != nil {
			t.Fatalf("dial %v: %v", dst, err)
		}
		defer c.Close()
		if err := roundTrip(c, "v6 plain"); err != nil {
			t.Fatalf("exchange: %v", err)
		}
	})

	syn := tcpSYN(a.Addr, b.Addr, 40123, denied)
	dstOpts := make([]byte, 8) // next header, length 0, PadN
	dstOpts[2], dstOpts[3] = 1, 4
	var tooMany []ext
	for range 9 {
		tooMany = append(tooMany, ext{ip6NextDstOpts, dstOpts})
	}
	pad := func(n int) []byte { return make([]byte, 8*n) }
	cases := []struct {
		name   string
		plan   policy.DirectionPlan
		exts   []ext
		proto  byte
		body   []byte
		reason DropReason
		wantP  policy.Protocol
		port   uint16 // want destination port of the event (0: none)
	}{
		{name: "atomic fragment syn to a denied port", plan: l3AllowPortDeny,
			exts: []ext{{ip6NextFragment, fragHdr(0, false, 0x6d6f6101)}}, proto: 6, body: syn,
			reason: DropPolicyDeny, wantP: policy.ProtoTCP, port: denied},
		{name: "first fragment syn to a denied port", plan: l3AllowPortDeny,
			exts: []ext{{ip6NextDstOpts, dstOpts}, {ip6NextFragment, fragHdr(0, true, 0x6d6f6102)}}, proto: 6, body: append(append([]byte(nil), syn...), pad(1)...),
			reason: DropPolicyDeny, wantP: policy.ProtoTCP, port: denied},
		{name: "later fragment of that datagram takes its ports", plan: l3AllowPortDeny,
			exts: []ext{{ip6NextFragment, fragHdr(8, false, 0x6d6f6102)}}, proto: 6, body: pad(5),
			reason: DropPolicyDeny, wantP: policy.ProtoTCP, port: denied},
		{name: "extension chain longer than the parser follows", plan: l3AllowPortDeny,
			exts: tooMany, proto: 6, body: append(append([]byte(nil), syn...), pad(2)...),
			reason: DropUnsupported, wantP: ip6NextDstOpts},
		{name: "non-first fragment of an unseen first fragment, no all-ports allow", plan: portAllowOnly,
			exts: []ext{{ip6NextFragment, fragHdr(8, true, 0x6d6f6103)}}, proto: 6, body: pad(3),
			reason: DropUnsupported, wantP: policy.ProtoTCP},
		{name: "non-first fragment of an unseen first fragment, all-ports deny", plan: allTCPDeny,
			exts: []ext{{ip6NextFragment, fragHdr(8, false, 0x6d6f6104)}}, proto: 6, body: pad(4),
			reason: DropPolicyDeny, wantP: policy.ProtoTCP},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.Sync(plan(tc.plan), ifaces, nil); err != nil {
				t.Fatalf("sync: %v", err)
			}
			pkt := ip6Packet(a.Addr, b.Addr, tc.exts, tc.proto, tc.body)
			if err := sendFrame(a, unix.ETH_P_IPV6, pkt); err != nil {
				t.Fatal(err)
			}
			length := uint32(len(pkt) + 14)
			ev := events.waitFor(t, "drop "+tc.reason.String(), func(ev Event) bool {
				return ev.Kind == EventDrop && ev.Endpoint == uint32(a.HostIfIndex) && ev.Length == length
			})
			if ev.Reason != tc.reason || ev.Proto != tc.wantP || ev.Dst.Port() != tc.port || ev.Dst.Addr() != b.Addr {
				t.Errorf("drop event = %+v, want reason %s, proto %d, to [%s]:%d", ev, tc.reason, tc.wantP, b.Addr, tc.port)
			}
		})
	}
}

// TestPrivilegedFragmentedDatagrams sends real UDP datagrams larger than
// the veths' MTU, which the sender's kernel fragments, through port-specific
// policy: the datagram to the allowed port arrives whole (its later
// fragments took its ports from the first), the one to another port does
// not, and an allowed ping that needs fragments gets its reply.
func TestPrivilegedFragmentedDatagrams(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	var allowedConn, otherConn net.PacketConn
	if err := tp.b.Do(func() (err error) {
		if allowedConn, err = net.ListenPacket("udp4", tp.b.Addr.String()+":0"); err != nil {
			return err
		}
		otherConn, err = net.ListenPacket("udp4", tp.b.Addr.String()+":0")
		return err
	}); err != nil {
		t.Fatalf("listen in b: %v", err)
	}
	t.Cleanup(func() { allowedConn.Close(); otherConn.Close() })
	allowed := uint16(allowedConn.LocalAddr().(*net.UDPAddr).Port)
	other := uint16(otherConn.LocalAddr().(*net.UDPAddr).Port)

	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	events := collectEvents(t, d)
	bIngress := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: allowed, To: allowed}}, Verdict: policy.VerdictAllow},
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 8, To: 8}}, Verdict: policy.VerdictAllow},
	}}
	if err := d.Sync(tp.plan(policy.DirectionPlan{}, bIngress), tp.ifaces(), nil); err != nil {
		t.Fatalf("sync: %v", err)
	}
	tp.attach(t, d)

	const size = 4000 // three fragments at the veths' MTU of 1500
	send := func(port uint16, fill byte) {
		t.Helper()
		msg := bytes.Repeat([]byte{fill}, size)
		if err := tp.a.Do(func() error {
			c, err := net.Dial("udp4", netip.AddrPortFrom(tp.b.Addr, port).String())
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(msg)
			return err
		}); err != nil {
			t.Fatalf("send to port %d: %v", port, err)
		}
	}
	recv := func(c net.PacketConn, wait time.Duration) ([]byte, error) {
		buf := make([]byte, 65536)
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			return nil, err
		}
		n, _, err := c.ReadFrom(buf)
		return buf[:n], err
	}

	t.Run("allowed port: the datagram arrives whole", func(t *testing.T) {
		send(allowed, 'a')
		got, err := recv(allowedConn, 3*time.Second)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		if len(got) != size || got[0] != 'a' || got[size-1] != 'a' {
			t.Fatalf("received %d bytes, want %d bytes of 'a'", len(got), size)
		}
	})
	t.Run("other port: nothing arrives", func(t *testing.T) {
		send(other, 'o')
		if got, err := recv(otherConn, time.Second); err == nil {
			t.Fatalf("received %d bytes on a port the policy does not allow", len(got))
		}
		ev := events.waitFor(t, "drop of the first fragment", func(ev Event) bool {
			return ev.Kind == EventDrop && ev.Endpoint == uint32(tp.b.HostIfIndex) && ev.Dst.Port() == other
		})
		if ev.Reason != DropPolicyDenied {
			t.Errorf("drop reason %s, want %s", ev.Reason, DropPolicyDenied)
		}
	})
	t.Run("fragmented ping gets its reply", func(t *testing.T) {
		pg, err := tp.a.NewPinger()
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Close()
		pg.Payload = 3000
		if err := pg.Ping(tp.b.Addr, 3*time.Second); err != nil {
			t.Fatalf("ping with %d bytes: %v", pg.Payload, err)
		}
	})
}
