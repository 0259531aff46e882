package datapath

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
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

// TestPrivilegedConntrackGC: ConntrackGC deletes exactly the expired
// entries and keeps live ones, so that a map filled with expired flows has
// room again for new flows without any eviction.
func TestPrivilegedConntrackGC(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	// Replies into a default-deny direction: the flow lives by its entries.
	plan := tp.plan(allowTCP(tp.idB, srv.tcpPort), allowTCP(tp.idA, srv.tcpPort))
	plan.Endpoints[0].Ingress = policy.DirectionPlan{Enforced: true}
	plan.Endpoints[1].Egress = policy.DirectionPlan{Enforced: true}
	if err := d.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)
	conn := establish(t, tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort))

	capacity := int(d.objs.MoatCt.MaxEntries())
	fill := capacity * 3 / 4
	// fillExpired writes fill entries of flows that expired long ago
	// (addresses in 192.0.2.0/24's neighbourhood, never used by the pods).
	fillExpired := func(base uint32) {
		t.Helper()
		keys := make([]moatCtKey, fill)
		vals := make([]moatCtEntry, fill)
		for i := range keys {
			keys[i].Saddr[10], keys[i].Saddr[11] = 0xff, 0xff
			binary.BigEndian.PutUint32(keys[i].Saddr[12:], base+uint32(i))
			keys[i].Proto = 17
			keys[i].Endpoint = uint32(tp.a.HostIfIndex)
			vals[i].Expires = 1 // ticks after boot: expired
		}
		if n, err := d.objs.MoatCt.BatchUpdate(keys, vals, nil); err != nil || n != fill {
			t.Fatalf("write %d expired entries: %d written: %v", fill, n, err)
		}
	}

	fillExpired(0xc6000000)
	st, err := d.ConntrackGC()
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != fill || st.Live != 2 || st.LiveTCP != 2 || st.Entries != fill+2 {
		t.Fatalf("first collection: %+v, want %d removed and the open flow's 2 entries live", st, fill)
	}
	after, err := d.ConntrackStats()
	if err != nil {
		t.Fatal(err)
	}
	if after.Entries != 2 || after.Live != 2 || after.Removed != 0 {
		t.Fatalf("after the collection: %+v, want only the open flow's 2 entries (a count-only sweep removes nothing)", after)
	}

	// With the expired entries gone, a second fill fits without evicting
	// anything: the idle flow keeps its entries and the next collection
	// finds every entry of the fill.
	fillExpired(0xc7000000)
	if err := echoOnce(conn, "idle flow after churn"); err != nil {
		t.Fatalf("the idle flow lost its entries: %v", err)
	}
	if st, err = d.ConntrackGC(); err != nil || st.Removed != fill || st.LiveTCP != 2 {
		t.Fatalf("second collection: %+v, %v: want %d removed and the open flow live", st, err, fill)
	}
}

// TestPrivilegedConntrackSize: CTMaxEntries sizes a new moat_ct; over a
// pinned map of another size the configured size applies from the first
// Sync (an upgrade), which copies the tracked flows into the new map.
func TestPrivilegedConntrackSize(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	open := func(size int) *Datapath {
		t.Helper()
		d, err := Open(Config{PinRoot: root, CTMaxEntries: size})
		testutil.Require(t, "datapath load", err)
		return d
	}
	capacity := func(d *Datapath) int {
		t.Helper()
		st, err := d.ConntrackStats()
		if err != nil {
			t.Fatal(err)
		}
		return st.Capacity
	}

	d := open(4096)
	if got := capacity(d); got != 4096 {
		t.Fatalf("new map: capacity %d, want 4096", got)
	}
	key := moatCtKey{Proto: 6, Endpoint: 1}
	if err := d.objs.MoatCt.Put(&key, &moatCtEntry{Expires: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	d.Close()

	d = open(8192)
	defer func() { _ = d.Cleanup() }()
	if err := d.Sync(&policy.Plan{}, nil, nil); err != nil {
		t.Fatalf("first sync (the upgrade's swap): %v", err)
	}
	if got := capacity(d); got != 8192 {
		t.Errorf("restart with another size: capacity %d, want the configured 8192", got)
	}
	var e moatCtEntry
	if err := d.objs.MoatCt.Lookup(&key, &e); err != nil {
		t.Errorf("restart with another size lost the tracked flow: %v", err)
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(root, "moat_ct"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if got := pinned.MaxEntries(); got != 8192 {
		t.Errorf("pinned moat_ct after the upgrade: %d entries, want 8192", got)
	}
}
