package datapath

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedUnchangedPlanWritesNothing: a Sync of a Plan whose content
// did not change (a new Plan value with another generation, as the agent
// compiles after an apiserver relist) writes and deletes no map entry, and
// neither does the first Sync of a datapath reopened over its pins (an
// agent restart). A changed Plan writes exactly what changed (the positive
// control for the counter).
func TestPrivilegedUnchangedPlanWritesNothing(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	d := openTestDatapath(t, root)
	const ifindex = 1_000_002 // never attached: Sync only writes maps
	ifaces := map[EndpointKey]int{{Namespace: "t", Name: "a"}: ifindex}
	plan := func(gen uint64, ports ...uint16) *policy.Plan {
		dp := policy.DirectionPlan{Enforced: true}
		for _, p := range ports {
			dp.Entries = append(dp.Entries, tcpEntry(1002, p, policy.VerdictAllow))
		}
		pf := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
		return &policy.Plan{
			Generation: gen,
			Endpoints: []policy.EndpointPlan{{
				Namespace: "t", Name: "a", Identity: 1001,
				Addresses: []netip.Addr{netip.MustParseAddr("10.201.9.1")}, Ingress: dp,
			}},
			IPCache: []policy.IPCacheEntry{
				{Prefix: pf("0.0.0.0/0"), Identity: policy.IDWorld},
				{Prefix: pf("10.201.9.1/32"), Identity: 1001},
				{Prefix: pf("10.201.8.7/32"), Identity: 1002},                  // a remote pod
				{Prefix: pf("192.168.77.2/32"), Identity: policy.IDRemoteNode}, // another node
				{Prefix: pf("192.168.77.9/32"), Identity: policy.IDKubeAPIServer},
			},
		}
	}
	total := func(m map[string]uint64) uint64 {
		var n uint64
		for _, v := range m {
			n += v
		}
		return n
	}
	if err := d.Sync(plan(1, 80, 443), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	first := d.MapUpdates()
	if first[MapPolicy] == 0 || first[MapIPCache] < 5 || first[MapEndpoints] == 0 {
		t.Fatalf("positive control: the first Sync counted %v, want policy, ipcache (5) and endpoint writes", first)
	}
	for gen := uint64(2); gen < 5; gen++ {
		if err := d.Sync(plan(gen, 80, 443), ifaces, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.MapUpdates(); !maps.Equal(got, first) {
		t.Errorf("unchanged plans wrote entries: counters %v after, %v before", got, first)
	}
	if err := d.Sync(plan(5, 80, 8080), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	changed := d.MapUpdates()
	// 443 deleted, 8080 written, the endpoint's config takes a new
	// revision; the ipcache is untouched.
	if changed[MapPolicy]-first[MapPolicy] != 2 || changed[MapIPCache] != first[MapIPCache] || changed[MapEndpoints] <= first[MapEndpoints] {
		t.Errorf("one port changed: counters %v, before %v; want 2 more policy writes, the same ipcache, a new endpoint config", changed, first)
	}

	// An agent restart: a new Datapath over the pins, the same plan.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openTestDatapath(t, root)
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := d.Sync(plan(1, 80, 8080), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	// No policy, ipcache or local-endpoint entry is written. The endpoint
	// config is rewritten once with fresh revisions: the endpoints' names
	// are not kept in the pins, so a reopened datapath cannot tell a
	// reused ifindex from the same endpoint (applyEndpoint) and makes its
	// tracked flows re-check the (unchanged) policy once.
	got := d.MapUpdates()
	if got[MapPolicy] != 0 || got[MapIPCache] != 0 || got[MapLocalEP] != 0 || got[MapEndpoints] > 1 {
		t.Errorf("the first Sync after reopening over the pins wrote %v, want no entry and at most the one endpoint config", got)
	}
	t.Logf("first Sync after reopening: %v (total %d)", got, total(got))
}
