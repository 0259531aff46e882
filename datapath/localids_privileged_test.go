package datapath

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedLocalIdentitiesFromPins: a datapath opened over pinned
// maps reads back the prefixes that an earlier one wrote with a local
// identity (trie and host map, IPv4 and IPv6), and only those: the agent
// adopts exactly these numbers before its first Plan.
func TestPrivilegedLocalIdentitiesFromPins(t *testing.T) {
	testutil.Privileged(t)
	root := testPinRoot(t)
	t.Cleanup(func() { _ = Cleanup(Config{PinRoot: root}) })
	l := func(n policy.ID) policy.ID { return policy.IDLocalFlag | n }
	p := netip.MustParsePrefix
	want := map[netip.Prefix]policy.ID{
		p("10.0.0.0/8"):       l(2),
		p("192.168.0.0/16"):   l(1),
		p("192.0.2.7/32"):     l(3), // host map
		p("2001:db8::/32"):    l(4),
		p("2001:db8::77/128"): l(5), // host map
	}
	plan := &policy.Plan{IPCache: []policy.IPCacheEntry{
		{Prefix: p("0.0.0.0/0"), Identity: policy.IDWorld},
		{Prefix: p("10.201.1.1/32"), Identity: 1001}, // an endpoint: not local
	}}
	for pf, id := range want {
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: pf, Identity: id})
	}

	d1 := openTestDatapath(t, root)
	if err := d1.Sync(plan, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := d1.LocalIdentities(); !maps.Equal(got, want) {
		t.Errorf("after Sync: local identities = %v, want %v", got, want)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := openTestDatapath(t, root)
	defer d2.Close()
	if got := d2.LocalIdentities(); !maps.Equal(got, want) {
		t.Errorf("reopened over the pins: local identities = %v, want %v", got, want)
	}
}
