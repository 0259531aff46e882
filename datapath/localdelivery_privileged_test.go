package datapath

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// hostTxPackets reads how many packets the host side of a pod's veth has
// transmitted towards the pod: packets the host's stack routed to it.
func hostTxPackets(t *testing.T, pod *testutil.Pod) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/net/%s/statistics/tx_packets", pod.HostIf))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPrivilegedLocalDelivery: once a flow between two local endpoints is
// tracked at both, from_endpoint hands its packets to the destination's side
// of the veth (bpf_redirect_peer) rather than to the host's routing. The
// host veths then transmit nothing while the pods exchange, the
// destination's ingress counters still count every packet, and a policy
// change still cuts the flow: after it the packets take the long way, where
// to_endpoint re-checks the flow.
func TestPrivilegedLocalDelivery(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	events := collectEvents(t, d)
	if err := d.Sync(tp.plan(allowTCP(tp.idB, srv.tcpPort), allowTCP(tp.idA, srv.tcpPort)), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)
	conn := establish(t, tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort))

	txA, txB := hostTxPackets(t, tp.a), hostTxPackets(t, tp.b)
	inB, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 50
	for i := range rounds {
		if err := echoOnce(conn, fmt.Sprintf("round %d", i)); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
	}
	// A few packets of the host's own (neighbour probes) may pass.
	if dA, dB := hostTxPackets(t, tp.a)-txA, hostTxPackets(t, tp.b)-txB; dA > 4 || dB > 4 {
		t.Errorf("the host routed %d packets to a and %d to b during %d echoes of a tracked flow, want none", dA, dB, rounds)
	}
	inB2, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if got := inB2.AllowedPackets - inB.AllowedPackets; got < rounds {
		t.Errorf("b's ingress counted %d allowed packets during %d echoes, want at least one per echo", got, rounds)
	}

	// b's ingress stops allowing a: the next packet goes the long way and
	// to_endpoint cuts the flow.
	if err := d.Sync(tp.plan(allowTCP(tp.idB, srv.tcpPort), allowTCP(tp.idA, srv.tcpPort+1)), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	if err := echoOnce(conn, "after revocation"); err == nil {
		t.Fatal("the flow still passes after b's ingress stopped allowing it")
	}
	events.waitFor(t, "drop of the revoked flow at b's ingress", func(ev Event) bool {
		return ev.Kind == EventDrop && ev.Reason == DropPolicyDenied && ev.Direction == policy.Ingress && ev.Dst.Port() == srv.tcpPort
	})
}

// TestPrivilegedLocalDeliveryNoSpoofing: a pod that sends packets with
// another local pod's source address cannot use that pod's flow to reach
// the destination directly: local_delivery only vouches for packets whose
// source is the sending endpoint's own address (the routed path has the
// host's reverse-path filter; here the raw packets carry no IP checksum,
// so that the routed path drops them and any that arrive at b came the
// direct way).
//
// The absence is watched at two places that a delivered packet must pass:
// a packet capture on b's eth0 and b's ingress counters (local_delivery
// counts there before it redirects). Positive controls show both see such
// a packet: the same raw packet sent by c itself, the flow's owner, is
// captured at b and counted, before the spoofed ones and again after them
// (the one after also bounds the wait for the absence).
func TestPrivilegedLocalDeliveryNoSpoofing(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	c := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr("10.201.3.1")})
	const idC = 1003
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	allowUDP := func(id policy.ID) policy.DirectionPlan {
		return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
			{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: srv.udpPort, To: srv.udpPort}}, Verdict: policy.VerdictAllow},
		}}
	}
	// b lets c in, not a; a's egress is not enforced.
	plan := tp.plan(policy.DirectionPlan{}, allowUDP(idC))
	plan.Endpoints = append(plan.Endpoints, policy.EndpointPlan{Namespace: "t", Name: "c", Identity: idC, Addresses: []netip.Addr{c.Addr}})
	plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(c.Addr, 32), Identity: idC})
	ifaces := tp.ifaces()
	ifaces[EndpointKey{Namespace: "t", Name: "c"}] = c.HostIfIndex
	if err := d.Sync(plan, ifaces, nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)
	if err := d.Attach(c.HostIfIndex); err != nil {
		t.Fatal(err)
	}

	// c's flow to b, from a fixed port: tracked at b's ingress.
	const cPort = 40123
	err := c.Do(func() error {
		conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: c.Addr.AsSlice(), Port: cPort},
			&net.UDPAddr{IP: tp.b.Addr.AsSlice(), Port: int(srv.udpPort)})
		if err != nil {
			return err
		}
		defer conn.Close()
		return echoOnce(conn, "c's flow")
	})
	if err != nil {
		t.Fatalf("c -> b: %v", err)
	}

	// The spoofed packets and c's controls differ only in the sender and
	// one payload byte, which tells them apart in the capture.
	const ctlBefore, spoof, ctlAfter = 'C', 'S', 'T'
	raw := func(tag byte) []byte {
		p := benchPacket(c.Addr, tp.b.Addr, policy.ProtoUDP, cPort, srv.udpPort, 0)[14:]
		p[28] = tag // first payload byte after the IPv4 and UDP headers
		return p
	}
	capB := openCapture(t, tp.b)
	tagOf := func(p []byte) (byte, bool) {
		if len(p) < 29 || p[0] != 0x45 || p[9] != byte(policy.ProtoUDP) ||
			netip.AddrFrom4([4]byte(p[12:16])) != c.Addr || netip.AddrFrom4([4]byte(p[16:20])) != tp.b.Addr ||
			binary.BigEndian.Uint16(p[20:]) != cPort || binary.BigEndian.Uint16(p[22:]) != srv.udpPort {
			return 0, false
		}
		return p[28], true
	}
	// control sends tag's packet from c and waits until b's eth0 has it,
	// counting the spoofed packets the capture shows on the way.
	spoofSeen := 0
	control := func(tag byte) {
		t.Helper()
		if err := sendFrame(c, unix.ETH_P_IP, raw(tag)); err != nil {
			t.Fatal(err)
		}
		capB.waitFor(t, fmt.Sprintf("c's raw packet %q on its own flow (the positive control: local delivery hands it to b)", tag), func(p []byte) bool {
			got, ok := tagOf(p)
			if ok && got == spoof {
				spoofSeen++
			}
			return ok && got == tag
		})
	}

	before, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	control(ctlBefore)
	mid, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if got := mid.AllowedPackets - before.AllowedPackets; got != 1 {
		t.Fatalf("b's ingress counted %d allowed packets for c's raw control packet, want 1: the counters would not show a delivered spoofed packet", got)
	}

	spoofer := tp.a // c here turns the absence checks below into failures
	aBefore, err := d.EndpointCounters(spoofer.HostIfIndex, policy.Egress)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := sendFrame(spoofer, unix.ETH_P_IP, raw(spoof)); err != nil {
			t.Fatal(err)
		}
	}
	// a's egress program saw all five (the first made a's egress entry;
	// the others found it and went to local_delivery).
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := d.EndpointCounters(spoofer.HostIfIndex, policy.Egress)
		if err != nil {
			t.Fatal(err)
		}
		seen := (a.AllowedPackets + a.DroppedPackets + a.RedirectedPackets) - (aBefore.AllowedPackets + aBefore.DroppedPackets + aBefore.RedirectedPackets)
		if seen >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's egress counted %d of the 5 spoofed packets within 5 s (%+v -> %+v)", seen, aBefore, a)
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
	control(ctlAfter)
	after, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if spoofSeen != 0 {
		t.Errorf("b's eth0 received %d packets that a sent with c's address, want none", spoofSeen)
	}
	if got := after.AllowedPackets - mid.AllowedPackets; got != 1 {
		t.Errorf("b's ingress counted %d allowed packets for a's 5 spoofed packets and c's 1 control, want 1 (c's)", got)
	}
}

// capture is an AF_PACKET socket in a pod's netns that receives the IPv4
// packets arriving at its eth0.
type capture struct{ fd int }

func openCapture(t *testing.T, pod *testutil.Pod) *capture {
	t.Helper()
	const proto = unix.ETH_P_IP>>8 | unix.ETH_P_IP<<8&0xff00 // network order
	var fd int
	err := pod.Do(func() error {
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return fmt.Errorf("find eth0: %w", err)
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("open packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: eth0.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to eth0: %w", err)
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return fmt.Errorf("set packet socket timeout: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("open capture in %s: %v", pod.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &capture{fd: fd}
}

// waitFor reads incoming packets until match accepts one, and fails the
// test if none does within 5 s.
func (c *capture) waitFor(t *testing.T, what string, match func([]byte) bool) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("read capture: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if match(buf[:n]) {
			return
		}
	}
	t.Fatalf("no %s within 5 s", what)
}
