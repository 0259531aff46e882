package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedConntrackStats drives real flows between two pods and
// checks what a sweep of moat_ct counts: each flow has one entry per
// endpoint it crosses, by protocol; a closed TCP flow is closing; expired
// entries stay in the map but no longer count as live.
func TestPrivilegedConntrackStats(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	const short = 2 * time.Second
	d, err := Open(Config{PinRoot: testPinRoot(t), CTLifetimeOther: short, CTLifetimeClosing: short})
	testutil.Require(t, "datapath load", err)
	t.Cleanup(func() { _ = d.Cleanup() })

	allow := func(id policy.ID) policy.DirectionPlan {
		return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
			{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: srv.tcpPort, To: srv.tcpPort}}, Verdict: policy.VerdictAllow},
			{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: srv.udpPort, To: srv.udpPort}}, Verdict: policy.VerdictAllow},
			{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 8, To: 8}}, Verdict: policy.VerdictAllow}, // echo request
		}}
	}
	if err := d.Sync(tp.plan(allow(tp.idB), allow(tp.idA)), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}

	st, err := d.ConntrackStats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Capacity != 262144 || st.Entries != 0 || st.Live != 0 || st.Pressure() != 0 {
		t.Fatalf("fresh map: %+v, want capacity 262144 and nothing in it", st)
	}
	tp.attach(t, d)

	const udpFlows = 5
	for i := range udpFlows {
		if err := probeUDP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.udpPort)); err != nil {
			t.Fatalf("udp flow %d: %v", i, err)
		}
	}
	open := establish(t, tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort))
	if err := probeTCP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)); err != nil {
		t.Fatalf("tcp flow that closes: %v", err)
	}
	if err := probeICMP(tp.a, tp.b.Addr); err != nil {
		t.Fatalf("ping: %v", err)
	}

	// Every flow crosses a's egress and b's ingress: two entries each. The
	// closed flow's last packets may still be on their way.
	st = waitConntrack(t, d, "both TCP flows tracked, one closing", func(s ConntrackStats) bool {
		return s.LiveTCP == 4 && s.LiveClosing == 2
	})
	if st.LiveUDP != 2*udpFlows || st.LiveICMP < 2 || st.LiveOther != 0 {
		t.Errorf("live by protocol: %+v, want %d UDP, at least 2 ICMP, no other", st, 2*udpFlows)
	}
	if st.Live != st.LiveTCP+st.LiveUDP+st.LiveICMP+st.LiveOther || st.Entries < st.Live {
		t.Errorf("inconsistent sweep: %+v", st)
	}
	if want := float64(st.Live) / 262144; st.Pressure() != want {
		t.Errorf("pressure %v, want %v", st.Pressure(), want)
	}
	tracked := st.Entries

	// UDP, ICMP and the closed flow expire after the short lifetimes; the
	// open TCP flow lives on; the expired entries stay until evicted.
	st = waitConntrack(t, d, "only the open flow live", func(s ConntrackStats) bool { return s.Live == 2 })
	if st.LiveTCP != 2 || st.LiveClosing != 0 || st.Entries < tracked {
		t.Errorf("after expiry: %+v, want the 2 entries of the open flow live and at least %d entries", st, tracked)
	}
	if err := echoOnce(open, "still open"); err != nil {
		t.Errorf("the open flow: %v", err)
	}
}

// waitConntrack sweeps until ok holds, for up to 6 s (a short lifetime of
// 2 s ends within two CT ticks of about 1.07 s after it is due).
func waitConntrack(t *testing.T, d *Datapath, what string, ok func(ConntrackStats) bool) ConntrackStats {
	t.Helper()
	deadline := time.Now().Add(6 * time.Second)
	for {
		st, err := d.ConntrackStats()
		if err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 6 s; last sweep %+v", what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
