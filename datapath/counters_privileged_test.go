package datapath

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedCounters checks the endpoint and rule counters (per-CPU
// array slots) through BPF_PROG_TEST_RUN on the loopback device, and that a
// slot or rule index handed out again, or left with counts by an earlier
// agent, starts from zero.
func TestPrivilegedCounters(t *testing.T) {
	testutil.Privileged(t)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() { _ = d.Cleanup() })
	const lo = 1 // test runs see the loopback device
	server, client := netip.MustParseAddr("10.239.100.1"), netip.MustParseAddr("10.239.0.1")
	ifaces := map[EndpointKey]int{{Namespace: "b", Name: "server"}: lo}
	planFor := func(port uint16) *policy.Plan {
		return &policy.Plan{
			Endpoints: []policy.EndpointPlan{{
				Namespace: "b", Name: "server", Identity: 40000,
				Addresses: []netip.Addr{server},
				Ingress: policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{{
					L4Key:   policy.L4Key{Identity: 30000, Proto: policy.ProtoUDP, Ports: policy.PortRange{From: port, To: port}},
					Verdict: policy.VerdictAllow,
				}}},
			}},
			IPCache: []policy.IPCacheEntry{{Prefix: netip.PrefixFrom(client, 32), Identity: 30000}},
		}
	}
	run := func(t *testing.T, port uint16, want uint32) int {
		t.Helper()
		pkt := benchPacket(client, server, policy.ProtoUDP, 40000, port, 0)
		ret, _, err := d.objs.ToEndpoint.Test(pkt)
		if err != nil || ret != want {
			t.Fatalf("run: verdict %d, %v; want %d", ret, err, want)
		}
		return len(pkt)
	}
	ruleOf := func(t *testing.T, port uint16) uint32 {
		t.Helper()
		for k, v := range d.Entries() {
			if k.Proto == policy.ProtoUDP && k.Ports.Port == port {
				return v.Rule
			}
		}
		t.Fatalf("no policy entry for port %d", port)
		return 0
	}

	t.Run("allowed and dropped packets", func(t *testing.T) {
		// Counts an earlier agent may have left in an index that no
		// rule holds: the rule that takes it must start from zero.
		ncpu, err := ebpf.PossibleCPU()
		if err != nil {
			t.Fatal(err)
		}
		stale := make([]moatRuleStats, ncpu)
		for i := range stale {
			stale[i] = moatRuleStats{Packets: 7, Bytes: 700}
		}
		if err := d.objs.MoatRuleStats.Put(uint32(1), stale); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(planFor(5201), ifaces, nil); err != nil {
			t.Fatal(err)
		}
		if idx := ruleOf(t, 5201); idx != 1 {
			t.Fatalf("first rule took index %d, want 1 (the stale one)", idx)
		}
		n := run(t, 5201, 0)
		run(t, 5201, 0)
		m := run(t, 9999, 2)
		got, err := d.EndpointCounters(lo, policy.Ingress)
		if err != nil {
			t.Fatal(err)
		}
		want := Counters{AllowedPackets: 2, AllowedBytes: uint64(2 * n), DroppedPackets: 1, DroppedBytes: uint64(m)}
		if got != want {
			t.Errorf("ingress counters = %+v, want %+v", got, want)
		}
		if eg, err := d.EndpointCounters(lo, policy.Egress); err != nil || eg != (Counters{}) {
			t.Errorf("egress counters = %+v, %v; want none", eg, err)
		}
		rules, err := d.RuleCounters()
		if err != nil {
			t.Fatal(err)
		}
		idx := ruleOf(t, 5201)
		if len(rules) != 1 || rules[idx] != (RuleCounter{Packets: 2, Bytes: uint64(2 * n)}) {
			t.Errorf("rule counters = %+v, want rule %d with 2 packets", rules, idx)
		}
		if ri, ok := d.Rule(idx); !ok || ri.Ports.From != 5201 {
			t.Errorf("Rule(%d) = %+v, %v; want the port 5201 rule", idx, ri, ok)
		}
	})
	t.Run("reused rule index starts from zero", func(t *testing.T) {
		old := ruleOf(t, 5201)
		if err := d.Sync(planFor(5202), ifaces, nil); err != nil {
			t.Fatal(err)
		}
		// The old rule was live during that Sync, which freed it; the
		// background scrub zeroes it, and then the next Sync reuses it.
		waitScrubbed(t, d)
		if err := d.Sync(planFor(5203), ifaces, nil); err != nil {
			t.Fatal(err)
		}
		if idx := ruleOf(t, 5203); idx != old {
			t.Fatalf("rule index %d, want the freed index %d again", idx, old)
		}
		rules, err := d.RuleCounters()
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 0 {
			t.Errorf("rule counters after the replacements = %+v, want none", rules)
		}
	})
	t.Run("endpoint gone and back starts from zero", func(t *testing.T) {
		if err := d.Sync(&policy.Plan{}, ifaces, nil); err != nil {
			t.Fatal(err)
		}
		if c, err := d.EndpointCounters(lo, policy.Ingress); err != nil || c != (Counters{}) {
			t.Errorf("counters of a removed endpoint = %+v, %v; want none", c, err)
		}
		if err := d.Sync(planFor(5203), ifaces, nil); err != nil {
			t.Fatal(err)
		}
		if c, err := d.EndpointCounters(lo, policy.Ingress); err != nil || c != (Counters{}) {
			t.Errorf("counters of a re-added endpoint = %+v, %v; want none", c, err)
		}
		n := run(t, 5203, 0)
		if c, err := d.EndpointCounters(lo, policy.Ingress); err != nil || c != (Counters{AllowedPackets: 1, AllowedBytes: uint64(n)}) {
			t.Errorf("counters = %+v, %v; want one allowed packet", c, err)
		}
	})
}

// waitScrubbed waits for the background zeroing of freed rule indices
// that a Sync started (scrubSoon).
func waitScrubbed(t *testing.T, d *Datapath) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.mu.Lock()
		left := len(d.state.dirtyRules)
		d.mu.Unlock()
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d freed rule indices still not zeroed after 5 s", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
