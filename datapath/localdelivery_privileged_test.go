package datapath

import (
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
// host's reverse-path filter; here the spoofed packets carry no IP
// checksum, so that the routed path drops them and any that arrive at b
// came the direct way).
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

	before, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	aBefore, err := d.EndpointCounters(tp.a.HostIfIndex, policy.Egress)
	if err != nil {
		t.Fatal(err)
	}
	spoofed := benchPacket(c.Addr, tp.b.Addr, policy.ProtoUDP, cPort, srv.udpPort, 0)[14:]
	for range 5 {
		if err := sendFrame(tp.a, unix.ETH_P_IP, spoofed); err != nil {
			t.Fatal(err)
		}
	}
	// Positive control: a's egress program saw all five (the first made
	// a's egress entry; the others found it) before b is checked for
	// absence, so the check below cannot pass just because nothing ran.
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, err := d.EndpointCounters(tp.a.HostIfIndex, policy.Egress)
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
	after, err := d.EndpointCounters(tp.b.HostIfIndex, policy.Ingress)
	if err != nil {
		t.Fatal(err)
	}
	if got := after.AllowedPackets - before.AllowedPackets; got != 0 {
		t.Errorf("b's ingress let in %d packets that a sent with c's address, want none", got)
	}
}
