package envoy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/moatnet/moat/policy"
)

// ipIndex answers "which addresses have identity X" the way the datapath
// does: an address has the identity of the longest ipcache prefix that
// contains it, and an address no prefix contains is world (as in Cilium).
//
// Matching "address in one of X's prefixes" is not enough: a pod
// 10.0.1.5/32 inside an allowed 10.0.0.0/8 CIDR has its own identity and
// must not match the CIDR's. So each prefix P of X becomes a term
// "in P and not in any more specific prefix inside P with another identity",
// and X's set is the OR of its terms. An address whose longest match is a
// prefix of X matches that prefix's term; any other address is excluded from
// every term of X by its own, more specific, prefix.
type ipIndex struct {
	entries []ipEntry // sorted by address, then prefix length
	byID    map[policy.ID][]netip.Prefix
	sets    map[policy.ID]ipSet
}

type ipEntry struct {
	prefix netip.Prefix
	id     policy.ID
}

// ipTerm matches addresses in prefix but in none of except.
type ipTerm struct {
	prefix netip.Prefix
	except []netip.Prefix
}

// ipSet is an OR of terms; an empty set matches nothing.
type ipSet []ipTerm

func newIPIndex(plan *policy.Plan) (*ipIndex, error) {
	ids := map[netip.Prefix]policy.ID{}
	add := func(p netip.Prefix, id policy.ID, what string) error {
		if !p.IsValid() {
			return fmt.Errorf("index %s: invalid prefix %q", what, p)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		p = p.Masked()
		if old, ok := ids[p]; ok && old != id {
			return fmt.Errorf("index %s: prefix %s has identities %d and %d", what, p, uint32(old), uint32(id))
		}
		ids[p] = id
		return nil
	}
	for _, e := range plan.IPCache {
		if err := add(e.Prefix, e.Identity, "ipcache"); err != nil {
			return nil, err
		}
	}
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		for _, a := range ep.Addresses {
			if !a.IsValid() {
				return nil, fmt.Errorf("index endpoint %s: invalid address", filterChainName(ep))
			}
			a = a.Unmap()
			if err := add(netip.PrefixFrom(a, a.BitLen()), ep.Identity, "endpoint "+filterChainName(ep)); err != nil {
				return nil, err
			}
		}
	}
	for _, p := range []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")} {
		if _, ok := ids[p]; !ok {
			ids[p] = policy.IDWorld
		}
	}
	x := &ipIndex{
		entries: make([]ipEntry, 0, len(ids)),
		byID:    map[policy.ID][]netip.Prefix{},
		sets:    map[policy.ID]ipSet{},
	}
	for p, id := range ids {
		x.entries = append(x.entries, ipEntry{p, id})
	}
	slices.SortFunc(x.entries, func(a, b ipEntry) int { return comparePrefix(a.prefix, b.prefix) })
	for _, e := range x.entries {
		x.byID[e.id] = append(x.byID[e.id], e.prefix)
	}
	return x, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// set returns the addresses whose identity is id.
func (x *ipIndex) set(id policy.ID) ipSet {
	if s, ok := x.sets[id]; ok {
		return s
	}
	var s ipSet
	for _, p := range x.byID[id] {
		i, _ := slices.BinarySearchFunc(x.entries, p, func(e ipEntry, p netip.Prefix) int { return comparePrefix(e.prefix, p) })
		t := ipTerm{prefix: p}
		var last netip.Prefix
		// Entries strictly inside p follow it contiguously in the sort order.
		for _, e := range x.entries[i+1:] {
			if !p.Contains(e.prefix.Addr()) {
				break
			}
			if e.id == id {
				continue
			}
			if last.IsValid() && last.Contains(e.prefix.Addr()) {
				continue // inside an exception already listed
			}
			t.except = append(t.except, e.prefix)
			last = e.prefix
		}
		s = append(s, t)
	}
	x.sets[id] = s
	return s
}

// union returns the addresses of any of ids, and whether ids cover every
// address (an empty list or IDAny in it).
func (x *ipIndex) union(ids []policy.ID) (s ipSet, all bool) {
	if len(ids) == 0 {
		return nil, true
	}
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for _, id := range ids {
		if id == policy.IDAny {
			return nil, true
		}
		s = append(s, x.set(id)...)
	}
	return s, false
}

// lookup is the datapath's longest-prefix match, for tests.
func (x *ipIndex) lookup(a netip.Addr) policy.ID {
	best, id := -1, policy.IDWorld
	for _, e := range x.entries {
		if e.prefix.Contains(a) && e.prefix.Bits() > best {
			best, id = e.prefix.Bits(), e.id
		}
	}
	return id
}

func (s ipSet) contains(a netip.Addr) bool {
	for _, t := range s {
		if !t.prefix.Contains(a) {
			continue
		}
		if !slices.ContainsFunc(t.except, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return true
		}
	}
	return false
}
