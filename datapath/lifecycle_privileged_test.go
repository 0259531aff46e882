package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

func tcxProgramCount(t *testing.T, ifindex int) int {
	t.Helper()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			t.Fatalf("query tcx programs on %d: %v", ifindex, err)
		}
		n += len(res.Programs)
	}
	return n
}

func allowTCP(id policy.ID, port uint16) policy.DirectionPlan {
	return policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: id, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: port, To: port}}, Verdict: policy.VerdictAllow},
	}}
}

func TestPrivilegedPolicyReplace(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	events := collectEvents(t, d)
	dst := netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)

	if err := d.Sync(tp.plan(policy.DirectionPlan{}, allowTCP(tp.idA, srv.tcpPort)), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)
	conn, err := dialTCP(tp.a, dst)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if err := echoOnce(conn, "before"); err != nil {
		t.Fatalf("echo before replace: %v", err)
	}

	t.Run("replace that still allows keeps the flow", func(t *testing.T) {
		// Same port, now through a range entry and an L4-only entry.
		replaced := policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
			{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: srv.tcpPort - 1, To: srv.tcpPort + 1}}, Verdict: policy.VerdictAllow},
			{L4Key: policy.L4Key{Proto: policy.ProtoUDP}, Verdict: policy.VerdictAllow},
		}}
		if err := d.Sync(tp.plan(policy.DirectionPlan{}, replaced), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		if err := echoOnce(conn, "after replace"); err != nil {
			t.Fatalf("established flow broke: %v", err)
		}
	})
	t.Run("replace that denies cuts the flow", func(t *testing.T) {
		if err := d.Sync(tp.plan(policy.DirectionPlan{}, allowTCP(tp.idA, srv.tcpPort+100)), tp.ifaces(), nil); err != nil {
			t.Fatal(err)
		}
		if err := echoOnce(conn, "after deny"); err == nil {
			t.Fatal("established flow still passes after the policy stopped allowing it")
		}
		events.waitFor(t, "drop of revoked flow", func(ev Event) bool {
			return ev.Kind == EventDrop && ev.Reason == DropPolicyDenied && ev.Dst.Port() == srv.tcpPort
		})
	})
}

// TestPrivilegedOlderPolicyLayout: an agent before the policy hash kept
// every entry in the trie. A restart over such pins adopts them, writes
// the single-port entries into the hash and then removes them from the
// trie, and traffic is enforced by the new layout.
func TestPrivilegedOlderPolicyLayout(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = Cleanup(Config{PinRoot: root}) })
	plan := tp.plan(policy.DirectionPlan{}, allowTCP(tp.idA, srv.tcpPort))
	dst := netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)

	d1 := openTestDatapath(t, root)
	if err := d1.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	// Rewrite the maps as the older layout had them.
	old := 0
	for k, v := range d1.Entries() {
		if !k.inHash() {
			continue
		}
		hk, tk, tv := k.hashKey(), k.bpf(), v.bpf()
		if err := d1.objs.MoatPolicy.Put(&tk, &tv); err != nil {
			t.Fatal(err)
		}
		if err := d1.objs.MoatPolicyH.Delete(&hk); err != nil {
			t.Fatal(err)
		}
		old++
	}
	if old == 0 {
		t.Fatal("the plan has no single-port entry to migrate")
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	d2 := openTestDatapath(t, root)
	defer d2.Close()
	events := collectEvents(t, d2)
	if got := len(d2.state.misplaced); got != old {
		t.Fatalf("adopted %d entries of the older layout, want %d", got, old)
	}
	if err := d2.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	if len(d2.state.misplaced) != 0 {
		t.Fatalf("%d entries of the older layout left after Sync", len(d2.state.misplaced))
	}
	var tk moatPolicyKey
	var tv moatPolicyVal
	if it := d2.objs.MoatPolicy.Iterate(); it.Next(&tk, &tv) {
		t.Fatalf("trie still holds %+v", tk)
	}
	tp.attach(t, d2)
	if err := probeTCP(tp.a, dst); err != nil {
		t.Fatalf("allowed port after migration: %v", err)
	}
	if err := probeUDP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.udpPort)); err == nil {
		t.Fatal("a UDP echo no entry allows answers after migration")
	}
	// The missing answer is b's ingress at work, not a probe lost elsewhere.
	events.waitFor(t, "drop of the UDP probe at b's ingress", func(ev Event) bool {
		return ev.Kind == EventDrop && ev.Endpoint == uint32(tp.b.HostIfIndex) && ev.Direction == policy.Ingress &&
			ev.Dst.Port() == srv.udpPort
	})
}

func TestPrivilegedRestartKeepsEnforcing(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = Cleanup(Config{PinRoot: root}) })
	plan := tp.plan(policy.DirectionPlan{}, policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
	}})

	// The agent keeps the host veths' forwarding on (KeepForwarding), and so
	// does this test: a host-wide ip_forward write by another program on a
	// shared host switches it off, and new flows then go unanswered while
	// the tracked ones go on (TestPrivilegedForwardingToggle). That is not
	// what made this test fail under load: its new pingers lost their own
	// replies in their raw sockets, filled by the background pinger's
	// (testutil.Pinger now filters; TestPrivilegedPingerKeepsItsReplies).
	keepCtx, stopKeep := context.WithCancel(t.Context())
	keepDone := make(chan error, 1)
	go func() {
		keepDone <- KeepForwarding(keepCtx, func() []string { return []string{tp.a.HostIf, tp.b.HostIf} }, nil)
	}()
	defer func() {
		stopKeep()
		if err := <-keepDone; err != nil {
			t.Errorf("keep forwarding: %v", err)
		}
	}()

	d1 := openTestDatapath(t, root)
	if err := d1.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d1)
	conn, err := dialTCP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()

	// Ping at 500 per second while the "agent" restarts (a new echo waits
	// for the previous one's reply). A dropped echo never gets a reply, so
	// a generous timeout only spares a loaded machine from false losses;
	// it cannot hide a real one.
	const restartPingTimeout = 5 * time.Second
	pg, err := tp.a.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	t0 := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, lost int
	var pingErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			sent++
			start := time.Now()
			if err := pg.Ping(tp.b.Addr, restartPingTimeout); err != nil {
				lost++
				pingErr = fmt.Errorf("ping sent at %v: %w", start.Sub(t0), err)
			}
		}
	}()
	if err := d1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	tClosed := time.Since(t0)
	d2 := openTestDatapath(t, root)
	tOpened := time.Since(t0)
	if got := len(d2.Attached()); got != 2 {
		t.Errorf("adopted %d interfaces, want 2", got)
	}
	if err := d2.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d2)
	t.Logf("restart: closed after %v, reopened after %v, synced after %v", tClosed, tOpened, time.Since(t0))
	// A few more pings after the swap, then stop.
	for range 20 {
		pg2, err := tp.a.NewPinger()
		if err != nil {
			t.Fatal(err)
		}
		err = pg2.Ping(tp.b.Addr, restartPingTimeout)
		pg2.Close()
		if err != nil {
			t.Fatalf("ping after restart: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	if sent < 50 {
		t.Errorf("only %d pings during the restart: the check proves nothing", sent)
	}
	if lost > 0 {
		t.Errorf("lost %d of %d pings during restart: %v", lost, sent, pingErr)
	}
	if err := echoOnce(conn, "after restart"); err != nil {
		t.Errorf("established flow broke across restart: %v", err)
	}
	// The policy is still enforced by the new programs: UDP from another
	// identity would be dropped; from a it is allowed by the L3 entry.
	if err := probeUDP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.udpPort)); err != nil {
		t.Errorf("udp after restart: %v", err)
	}

	t.Run("cleanup leaves nothing", func(t *testing.T) {
		if err := d2.Cleanup(); err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin root %s still exists (stat: %v)", root, err)
		}
		for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex} {
			if n := tcxProgramCount(t, idx); n != 0 {
				t.Errorf("ifindex %d still has %d tcx programs", idx, n)
			}
		}
	})
}

func TestPrivilegedLegacyTC(t *testing.T) {
	testutil.Privileged(t)
	tp := newTwoPods(t)
	srv := startEcho(t, tp.b)
	root := testPinRoot(t)
	d, err := Open(Config{PinRoot: root, Attach: AttachTC})
	testutil.Require(t, "datapath load", err)
	t.Cleanup(func() { _ = d.Cleanup() })
	if err := d.Sync(tp.plan(policy.DirectionPlan{}, allowTCP(tp.idA, srv.tcpPort)), tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int{tp.a.HostIfIndex, tp.b.HostIfIndex} {
		if err := d.Attach(idx); err != nil {
			t.Fatal(err)
		}
		if n := tcxProgramCount(t, idx); n != 0 {
			t.Fatalf("tc mode attached %d tcx programs", n)
		}
	}
	if err := probeTCP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.tcpPort)); err != nil {
		t.Errorf("allowed tcp: %v", err)
	}
	if err := probeUDP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.udpPort)); err == nil {
		t.Error("udp passed a policy that only allows tcp")
	}
	if err := d.Cleanup(); err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	out := testutil.RunCmd(t, "tc", "filter", "show", "dev", tp.b.HostIf, "egress")
	if len(out) != 0 {
		t.Errorf("filters left after cleanup: %s", out)
	}
	if err := probeUDP(tp.a, netip.AddrPortFrom(tp.b.Addr, srv.udpPort)); err != nil {
		t.Errorf("udp after cleanup (no programs): %v", err)
	}
}
