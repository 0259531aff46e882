package datapath

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// TestPrivilegedPatchIPCache: PatchIPCache writes and deletes exactly the
// host entries it is given in the kernel's map, and records them as a Sync
// does: a following Sync of a Plan that contains the patched entries
// writes no ipcache entry, and one that lacks them deletes them.
func TestPrivilegedPatchIPCache(t *testing.T) {
	testutil.Privileged(t)
	d := openTestDatapath(t, testPinRoot(t))
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	const class = policy.ID(policy.IDLocalFlag | 7)
	ifaces := map[EndpointKey]int{{Namespace: "t", Name: "a"}: 1_000_003}
	pf := netip.MustParsePrefix
	v4, v6 := pf("192.0.2.44/32"), pf("2001:db8::44/128")
	plan := func(gen uint64, learned ...netip.Prefix) *policy.Plan {
		p := &policy.Plan{
			Generation: gen,
			Endpoints: []policy.EndpointPlan{{
				Namespace: "t", Name: "a", Identity: 1001,
				Addresses: []netip.Addr{netip.MustParseAddr("10.201.9.1")},
				Egress:    policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{tcpEntry(class, 443, policy.VerdictAllow)}},
			}},
			IPCache: []policy.IPCacheEntry{
				{Prefix: pf("0.0.0.0/0"), Identity: policy.IDWorld},
				{Prefix: pf("::/0"), Identity: policy.IDWorld},
				{Prefix: pf("10.201.9.1/32"), Identity: 1001},
				{Prefix: pf("192.0.2.1/32"), Identity: class},
			},
		}
		for _, l := range learned {
			p.IPCache = append(p.IPCache, policy.IPCacheEntry{Prefix: l, Identity: class})
		}
		return p
	}
	lookup := func(p netip.Prefix) (policy.ID, bool) {
		var v moatIpcacheVal
		err := d.objs.MoatIpcacheH.Lookup(moatIpcacheHostKey{Addr: p.Addr().As16()}, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, false
		}
		if err != nil {
			t.Fatalf("look up %s: %v", p, err)
		}
		return policy.ID(v.Identity), true
	}
	if err := d.Sync(plan(1), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{v4, v6} {
		if _, ok := lookup(p); ok {
			t.Fatalf("positive control: %s is in the map before the patch", p)
		}
	}
	before := d.MapUpdates()[MapIPCache]
	if err := d.PatchIPCache(policy.IPCacheDelta{Put: []policy.IPCacheEntry{{Prefix: v4, Identity: class}, {Prefix: v6, Identity: class}}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{v4, v6} {
		if id, ok := lookup(p); !ok || id != class {
			t.Fatalf("after the patch %s has identity %v (present %v), want %v", p, id, ok, class)
		}
	}
	if n := d.MapUpdates()[MapIPCache] - before; n != 2 {
		t.Errorf("the patch counted %d ipcache writes, want 2", n)
	}

	// A Sync of the Plan that includes the patch writes nothing to the
	// ipcache: the patch was recorded.
	before = d.MapUpdates()[MapIPCache]
	if err := d.Sync(plan(2, v4, v6), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	if n := d.MapUpdates()[MapIPCache] - before; n != 0 {
		t.Errorf("a Sync of the patched state wrote %d ipcache entries, want 0", n)
	}

	// A patch deletes; a Sync without the entry then writes nothing.
	if err := d.PatchIPCache(policy.IPCacheDelta{Delete: []netip.Prefix{v6}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := lookup(v6); ok {
		t.Fatalf("%s is still in the map after the patch deleted it", v6)
	}
	before = d.MapUpdates()[MapIPCache]
	if err := d.Sync(plan(3, v4), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	if n := d.MapUpdates()[MapIPCache] - before; n != 0 {
		t.Errorf("a Sync after the deleting patch wrote %d ipcache entries, want 0", n)
	}
	// And a Sync that drops a patched entry deletes it from the kernel.
	if err := d.Sync(plan(4), ifaces, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := lookup(v4); ok {
		t.Fatalf("%s survived a Sync of a Plan without it", v4)
	}

	// A prefix that is not a host's is refused with its name, and nothing
	// of that patch is written.
	err := d.PatchIPCache(policy.IPCacheDelta{Put: []policy.IPCacheEntry{{Prefix: v4, Identity: class}, {Prefix: pf("198.51.100.0/24"), Identity: class}}})
	if err == nil || !strings.Contains(err.Error(), "198.51.100.0/24") {
		t.Fatalf("a /24 in a patch: err %v, want one that names it", err)
	}
	if _, ok := lookup(v4); ok {
		t.Fatal("a refused patch wrote part of its entries")
	}
}
