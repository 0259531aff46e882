package datapath

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"

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
