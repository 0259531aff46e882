package envoy

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"

	"github.com/moatnet/moat/policy"
)

// randomPlan builds an ipcache of nested prefixes inside 10.0.0.0/16 and
// fd00::/112 with a handful of identities, so that exceptions nest.
func randomIPCache(rng *rand.Rand) *policy.Plan {
	p := &policy.Plan{}
	seen := map[netip.Prefix]bool{}
	for range 1 + rng.IntN(40) {
		var base netip.Addr
		var bits int
		if rng.IntN(4) == 0 {
			a := [16]byte{0: 0xfd, 14: byte(rng.IntN(256)), 15: byte(rng.IntN(256))}
			base, bits = netip.AddrFrom16(a), 112+rng.IntN(17)
		} else {
			base, bits = netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(256)), byte(rng.IntN(256))}), 16+rng.IntN(17)
		}
		pre := netip.PrefixFrom(base, bits).Masked()
		if seen[pre] {
			continue
		}
		seen[pre] = true
		p.IPCache = append(p.IPCache, policy.IPCacheEntry{Prefix: pre, Identity: policy.ID(256 + rng.IntN(5))})
	}
	return p
}

func randomAddr(rng *rand.Rand) netip.Addr {
	switch rng.IntN(5) {
	case 0:
		return netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(rng.IntN(256)), 15: byte(rng.IntN(256))})
	case 1:
		return netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(256))})
	}
	return netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(256)), byte(rng.IntN(256))})
}

// TestIPSetMatchesLPM checks the RBAC principals and permissions built for
// each identity against the datapath's longest-prefix match: a slow,
// obviously correct reference.
func TestIPSetMatchesLPM(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := range 60 {
		plan := randomIPCache(rng)
		x, err := newIPIndex(plan)
		if err != nil {
			t.Fatalf("trial %d: newIPIndex: %v", trial, err)
		}
		ids := []policy.ID{policy.IDWorld, 256, 257, 258, 259, 260, 999}
		principals := map[policy.ID]*rbacv3.Principal{}
		perms := map[policy.ID]*rbacv3.Permission{}
		for _, id := range ids {
			s, _ := x.union([]policy.ID{id})
			principals[id] = orPrincipals(principalTerms(s))
			perms[id] = orPermissions(permissionTerms(s))
		}
		for range 100 {
			a := randomAddr(rng)
			want := x.lookup(a)
			for _, id := range ids {
				r := request{src: netip.AddrPortFrom(a, 1), dst: netip.AddrPortFrom(a, 2)}
				if got := evalPrincipal(t, principals[id], r); got != (want == id) {
					t.Fatalf("trial %d: principal of %d on %s = %v, but LPM says %d\nipcache: %v", trial, id, a, got, want, plan.IPCache)
				}
				if got := evalPermission(t, perms[id], r); got != (want == id) {
					t.Fatalf("trial %d: permission of %d on %s = %v, but LPM says %d", trial, id, a, got, want)
				}
			}
		}
	}
}

func TestIPIndexUnion(t *testing.T) {
	x, err := newIPIndex(&policy.Plan{IPCache: []policy.IPCacheEntry{{Prefix: pfx("10.0.0.1/32"), Identity: 300}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ids     []policy.ID
		all     bool
		matches []string
	}{
		{"empty is any", nil, true, nil},
		{"IDAny is any", []policy.ID{300, policy.IDAny}, true, nil},
		{"known identity", []policy.ID{300, 300}, false, []string{"10.0.0.1"}},
		{"unknown identity matches nothing", []policy.ID{12345}, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, all := x.union(tc.ids)
			if all != tc.all {
				t.Fatalf("all = %v, want %v", all, tc.all)
			}
			if all {
				return
			}
			for _, a := range []string{"10.0.0.1", "10.0.0.2", "::1"} {
				want := false
				for _, m := range tc.matches {
					want = want || m == a
				}
				if got := s.contains(addr(a)); got != want {
					t.Errorf("contains(%s) = %v, want %v", a, got, want)
				}
			}
		})
	}
}
