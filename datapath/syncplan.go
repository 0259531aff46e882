package datapath

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/moatnet/moat/policy"
)

// syncplan.go is the pure half of Sync: from what the maps hold (the
// syncState) and what they should hold (a MapState with rule indices and
// counter slots assigned) it computes the ordered list of map writes and
// deletions; mapsync.go applies them in that order (in batches that keep
// it). The order is the point:
//
// Invariant (make-before-break): after every single operation of the
// list, every packet's policy decision (ipcache lookup, then the policy
// lookups of bpf/policy.h, then the endpoint's enforced flag) is the one
// the old maps gave it or the one the new maps give it.
//
// Why the phases keep it: a packet's decision depends on its endpoint's
// config (flags), the identity the ipcache gives its peer, and at most
// four policy entries, one per lookup shape (identity|any x proto|any),
// each the first found among single port, range block, every port; the
// verdict is the highest, ties to the earlier lookup. Entries of an
// identity no address has, or of an endpoint without a config, decide
// nothing, so they can be written before and deleted after. An address
// whose identity changes is parked on a transit identity, a copy of its
// old one, so that from then on all four of its entries change only one
// at a time, in the verdict order of phaseUpgrade and phaseDowngrade
// (which takes the highest of four from its old value straight to its new
// one). It lands on its new identity once the transit copy holds the new
// identity's entries. No identity number needs to keep its meaning across
// a Sync for this: a restarted agent that numbers prefixes afresh is
// safe. The stable numbers of policy.LocalAllocator are for the proxies
// and the tracked flows, which also hold identity numbers.
//
// TestSyncMakeBeforeBreak checks the invariant over 10,000 random changes
// through the real compiler against a Go model of the programs' lookups
// (syncmodel_test.go). Not modelled: traffic from a proxy (its identity
// comes from the mark, which the maps do not decide) and fragments
// (decided by the same lookups without a port). While a Sync runs, an
// event may carry a transit identity (IDTransitFlag set) as the peer's.
//
// Reachable: an entry can decide a packet only when its endpoint has a
// config and its identity is IDAny, world, or some ipcache value.
type syncPhase uint8

const (
	// phaseRemoveEndpoints deletes the configs of endpoints that are gone:
	// their packets are dropped (no endpoint), which is the new decision.
	phaseRemoveEndpoints syncPhase = iota
	// phaseWiden announces in each remaining endpoint's flags the shapes,
	// ranges and entries of both states (the enforced bits stay old): an
	// announced lookup that finds nothing changes no decision.
	phaseWiden
	// phaseUnreachable writes and deletes the entries that no packet can
	// reach yet: those of endpoints without a config (new ones) and of
	// identities no current ipcache entry maps to (new identities).
	phaseUnreachable
	// phaseDivert parks every address whose identity changes on a transit
	// identity (policy.IDTransitFlag) whose entries are a copy of its old
	// identity's (written in phaseUnreachable): every prefix, old or new,
	// gets the identity of its cell (the addresses whose longest prefix it
	// is among old and new together), which is the old identity or its
	// transit copy. No decision changes. From here on a moving address's
	// entries change only by the ordered writes below, together with the
	// every-identity entries that also cover it. (A cell for which nothing
	// that decides its packets changes in the phases up to phaseLand, at
	// any endpoint, skips the transit and moves here straight to its new
	// identity, whose entries are in place: its decision goes from old to
	// new in that one write.)
	phaseDivert
	// phaseUpgrade writes the entries, reachable before and after (transit
	// ones included), whose
	// verdict rises (or whose payload changes at equal verdict), highest
	// verdict first and, within one verdict, the lookup that wins ties
	// (bpf/policy.h: identity+proto, identity, proto, any; exact port,
	// range, every port) first: the highest verdict a packet sees is its
	// old one until the entry that makes its new one is in place.
	phaseUpgrade
	// phaseEnforce switches the endpoints' enforced bits to the new ones.
	// Every entry of both states is in place (upgrades done, nothing
	// removed), so only packets no entry of either state covers change,
	// and those go from their old default to their new one.
	phaseEnforce
	// phaseDowngrade deletes entries and lowers verdicts, lowest old
	// verdict first and, within one, the lookup that loses ties first: the
	// entry that made a packet's old decision goes last.
	phaseDowngrade
	// phaseLand gives every prefix its new identity (a transit identity
	// holds its new identity's entries by now: no decision changes), then
	// deletes the prefixes that go (their addresses fall to a prefix that
	// carries the same new identity or its transit copy).
	phaseLand
	// phaseUnreachableLate deletes the entries of identities that no
	// ipcache entry maps to any more, and the transit entries.
	phaseUnreachableLate
	// phaseFinal writes each endpoint's final config (exact flags, which
	// no longer announce the removed shapes; identity; counter slot; new
	// revisions for changed directions, so tracked flows re-check) and
	// the local endpoint addresses. New endpoints get their config here,
	// after all their entries and ipcache entries are in place.
	phaseFinal
)

var syncPhaseNames = [...]string{"remove-endpoints", "widen", "unreachable", "divert", "upgrade", "enforce", "downgrade", "land", "unreachable-late", "final"}

func (p syncPhase) String() string { return syncPhaseNames[p] }

type syncOpKind uint8

const (
	opPutPolicy syncOpKind = iota
	opDeletePolicy
	opDeleteMisplaced // a trie entry of an older layout whose replacement is in the hash
	opPutIPCache
	opDeleteIPCache
	opPutEndpoint
	opDeleteEndpoint
	opPutLocal
	opDeleteLocal
)

// syncOp is one map operation of a Sync.
type syncOp struct {
	Phase syncPhase
	Kind  syncOpKind

	Key   PolicyKey   // opPutPolicy, opDeletePolicy, opDeleteMisplaced
	Value PolicyValue // opPutPolicy

	Prefix   netip.Prefix // opPutIPCache, opDeleteIPCache
	Identity policy.ID    // opPutIPCache

	Endpoint uint32             // opPutEndpoint, opDeleteEndpoint, opPutLocal
	Config   moatEndpointConfig // opPutEndpoint; revisions are the apply layer's
	// Final marks the endpoint's last write of the Sync, which takes
	// new revisions where entries changed (see Datapath.applyEndpoint).
	Final bool

	Addr netip.Addr // opPutLocal, opDeleteLocal
}

// endpointFlags returns the config flags an endpoint of want gets: its
// enforced/entries bits and the lookups its entries need.
func endpointFlags(want *MapState) map[uint32]uint32 {
	flags := make(map[uint32]uint32, len(want.Endpoints))
	for id, es := range want.Endpoints {
		flags[id] = es.Flags | epFlagShapes
	}
	for k := range want.Policy {
		if _, ok := flags[k.Endpoint]; ok {
			flags[k.Endpoint] |= k.lookupFlags()
		}
	}
	return flags
}

const epFlagEnforced = epFlagIngressEnforced | epFlagEgressEnforced

// widenFlags announces the lookups of both states, with cur's enforced bits.
func widenFlags(cur, want uint32) uint32 {
	if cur&epFlagShapes == 0 {
		// An older config without shapes makes every lookup already.
		return cur | want&(epFlagIngressEntries|epFlagEgressEntries)
	}
	return cur | want&^epFlagEnforced
}

// lookupRank orders the keys that can cover one packet as the program
// prefers them on equal verdicts: identity+proto, identity, proto, any;
// within one, exact port (hash), range block (trie), every port (hash).
func (k PolicyKey) lookupRank() int {
	var shape int
	switch {
	case k.Identity != policy.IDAny && k.Proto != policy.ProtoAny:
		shape = 0
	case k.Identity != policy.IDAny:
		shape = 1
	case k.Proto != policy.ProtoAny:
		shape = 2
	default:
		shape = 3
	}
	sub := 1
	switch k.Ports.Bits {
	case 16:
		sub = 0
	case 0:
		sub = 2
	}
	return shape*3 + sub
}

func comparePolicyKeys(a, b PolicyKey) int {
	return cmp.Or(
		cmp.Compare(a.Endpoint, b.Endpoint),
		cmp.Compare(a.Direction, b.Direction),
		cmp.Compare(a.Identity, b.Identity),
		cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Ports.Port, b.Ports.Port),
		cmp.Compare(a.Ports.Bits, b.Ports.Bits),
	)
}

// comparePrefixesLongestFirst orders longest first (IPv4 as the trie
// holds it, IPv4-mapped), then by address.
func comparePrefixesLongestFirst(a, b netip.Prefix) int {
	la, lb := a.Bits(), b.Bits()
	if a.Addr().Is4() {
		la += ipcacheV4Offset
	}
	if b.Addr().Is4() {
		lb += ipcacheV4Offset
	}
	return cmp.Or(cmp.Compare(lb, la), a.Addr().Compare(b.Addr()))
}

// policyChange is one policy key whose entry differs between the states.
type policyChange struct {
	key      PolicyKey
	old, new PolicyValue
	had, has bool
}

func (c policyChange) op(ph syncPhase) syncOp {
	if c.has {
		return syncOp{Phase: ph, Kind: opPutPolicy, Key: c.key, Value: c.new}
	}
	return syncOp{Phase: ph, Kind: opDeletePolicy, Key: c.key}
}

// cell is the identity of the addresses whose longest prefix, among the
// old and the new ipcache prefixes together, is one prefix: before and
// after the Sync.
type cell struct{ oid, nid policy.ID }

// prefixIndex finds, for a prefix, the longest prefix of a set that holds
// it, as the ipcache lookup would (IPv4 IPv4-mapped): one map probe per
// prefix length present in the set.
type prefixIndex struct {
	m      map[netip.Prefix]policy.ID
	v4, v6 []int // lengths present, longest first (v6: native IPv6 prefixes)
}

func newPrefixIndex(m map[netip.Prefix]policy.ID) *prefixIndex {
	x := &prefixIndex{m: m}
	seen4, seen6 := map[int]bool{}, map[int]bool{}
	for p := range m {
		if p.Addr().Is4() {
			if !seen4[p.Bits()] {
				seen4[p.Bits()] = true
				x.v4 = append(x.v4, p.Bits())
			}
		} else if !seen6[p.Bits()] {
			seen6[p.Bits()] = true
			x.v6 = append(x.v6, p.Bits())
		}
	}
	slices.SortFunc(x.v4, func(a, b int) int { return b - a })
	slices.SortFunc(x.v6, func(a, b int) int { return b - a })
	return x
}

// longest returns the value of the longest prefix of the set that holds p
// (p itself included), world when none does.
func (x *prefixIndex) longest(p netip.Prefix) policy.ID {
	a := p.Addr()
	if a.Is4() {
		for _, l := range x.v4 {
			if l <= p.Bits() {
				if id, ok := x.m[netip.PrefixFrom(a, l).Masked()]; ok {
					return id
				}
			}
		}
		a = netip.AddrFrom16(a.As16()) // IPv4-mapped: IPv6 prefixes of /96 or less may hold it
		for _, l := range x.v6 {
			if l <= ipcacheV4Offset {
				if id, ok := x.m[netip.PrefixFrom(a, l).Masked()]; ok {
					return id
				}
			}
		}
		return policy.IDWorld
	}
	for _, l := range x.v6 {
		if l <= p.Bits() {
			if id, ok := x.m[netip.PrefixFrom(a, l).Masked()]; ok {
				return id
			}
		}
	}
	return policy.IDWorld
}

// mapped returns p in the trie's address space: IPv4 prefixes IPv4-mapped,
// 96 bits longer.
func mapped(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+ipcacheV4Offset)
	}
	return p
}

// planSync computes the operations that take the maps from cur to want
// (whose policy values carry their rule indices; slots gives each wanted
// endpoint its counter slot). It is pure and deterministic.
func planSync(cur *syncState, want *MapState, slots map[uint32]uint32) []syncOp {
	var ops []syncOp
	flags := endpointFlags(want)
	live := func(ep uint32) bool {
		_, a := cur.endpoints[ep]
		_, b := want.Endpoints[ep]
		return a && b
	}

	// phaseRemoveEndpoints
	var gone []uint32
	for id := range cur.endpoints {
		if _, ok := want.Endpoints[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		ops = append(ops, syncOp{Phase: phaseRemoveEndpoints, Kind: opDeleteEndpoint, Endpoint: id})
	}

	// phaseWiden
	var both []uint32
	for id := range want.Endpoints {
		if _, ok := cur.endpoints[id]; ok {
			both = append(both, id)
		}
	}
	slices.Sort(both)
	widened := map[uint32]moatEndpointConfig{}
	for _, id := range both {
		c := cur.endpoints[id]
		w := c
		w.Flags = widenFlags(c.Flags, flags[id])
		widened[id] = w
		if w != c {
			ops = append(ops, syncOp{Phase: phaseWiden, Kind: opPutEndpoint, Endpoint: id, Config: w})
		}
	}

	// The cells of the ipcache and their transit identities: one per
	// (old, new) pair that differs, numbered from IDTransitFlag past any
	// number the maps hold (a failed Sync may have left transit entries).
	var union []netip.Prefix
	for p := range cur.ipcache {
		union = append(union, p)
	}
	for p := range want.IPCache {
		if _, ok := cur.ipcache[p]; !ok {
			union = append(union, p)
		}
	}
	slices.SortFunc(union, comparePrefixesLongestFirst)
	cells := make(map[netip.Prefix]cell, len(union))
	var moves []cell
	curIdx, wantIdx := newPrefixIndex(cur.ipcache), newPrefixIndex(want.IPCache)
	moving := map[cell]bool{}
	for _, p := range union {
		c := cell{curIdx.longest(p), wantIdx.longest(p)}
		cells[p] = c
		if c.oid != c.nid && !moving[c] {
			moving[c] = true
			moves = append(moves, c)
		}
	}
	slices.SortFunc(moves, func(a, b cell) int { return cmp.Or(cmp.Compare(a.oid, b.oid), cmp.Compare(a.nid, b.nid)) })
	var transit map[cell]policy.ID // set below
	parked := func(p netip.Prefix) policy.ID {
		c := cells[p]
		if c.oid == c.nid {
			return c.oid
		}
		if t, ok := transit[c]; ok {
			return t
		}
		return c.nid // moves directly: see needsTransit
	}

	// Identities the ipcache maps to before (world is every lookup's
	// default) and after.
	curIDs := map[policy.ID]bool{policy.IDWorld: true}
	for _, id := range cur.ipcache {
		curIDs[id] = true
	}
	wantIDs := map[policy.ID]bool{policy.IDWorld: true}
	for _, id := range want.IPCache {
		wantIDs[id] = true
	}

	// Policy changes, by phase.
	var early, up, down, late []policyChange
	add := func(c policyChange) {
		id := c.key.Identity
		switch {
		case !live(c.key.Endpoint) || (id != policy.IDAny && !curIDs[id]):
			early = append(early, c)
		case id != policy.IDAny && !wantIDs[id]:
			late = append(late, c)
		case c.has && (!c.had || c.new.Verdict >= c.old.Verdict):
			up = append(up, c)
		default:
			down = append(down, c)
		}
	}
	for k, de := range want.Policy {
		if v, ok := cur.policy[k]; !ok || v != de.Value {
			add(policyChange{key: k, old: v, new: de.Value, had: ok, has: true})
		}
	}
	for k, v := range cur.policy {
		if _, ok := want.Policy[k]; !ok {
			add(policyChange{key: k, old: v, had: true})
		}
	}
	// A cell needs a transit identity only where, at some endpoint, the
	// entries of its old or new identity or the every-identity entries
	// change between the phases that the ipcache writes bracket, or the
	// enforced bits change: otherwise it can move in one write, in
	// phaseDivert (its new identity's entries, if new, are written in
	// phaseUnreachable before; its old identity's, if they go, are
	// deleted in phaseUnreachableLate after).
	busy := map[uint32]map[policy.ID]bool{}
	for _, list := range [][]policyChange{up, down} {
		for _, c := range list {
			m := busy[c.key.Endpoint]
			if m == nil {
				m = map[policy.ID]bool{}
				busy[c.key.Endpoint] = m
			}
			m[c.key.Identity] = true
		}
	}
	for _, id := range both {
		if cur.endpoints[id].Flags&epFlagEnforced != flags[id]&epFlagEnforced {
			busy[id] = map[policy.ID]bool{policy.IDAny: true} // every packet: see below
		}
	}
	needsTransit := func(c cell) bool {
		for _, m := range busy {
			if m[c.oid] || m[c.nid] || m[policy.IDAny] {
				return true
			}
		}
		return false
	}
	moves = slices.DeleteFunc(moves, func(c cell) bool { return !needsTransit(c) })
	held := map[policy.ID]bool{}
	for _, id := range cur.ipcache {
		held[id] = true
	}
	for k := range cur.policy {
		held[k.Identity] = true
	}
	transit = make(map[cell]policy.ID, len(moves))
	next := policy.IDTransitFlag
	for _, c := range moves {
		for held[next] {
			next++
		}
		transit[c] = next
		next++
	}

	// Transit entries: written (unreachable) as copies of the old
	// identity's, moved to the new identity's with the others, deleted
	// once no address is parked on them.
	if len(moves) > 0 {
		byID := func(m map[PolicyKey]PolicyValue) map[policy.ID][]PolicyKey {
			out := map[policy.ID][]PolicyKey{}
			for k := range m {
				if live(k.Endpoint) {
					out[k.Identity] = append(out[k.Identity], k)
				}
			}
			return out
		}
		wantVals := make(map[PolicyKey]PolicyValue, len(want.Policy))
		for k, de := range want.Policy {
			wantVals[k] = de.Value
		}
		curBy, wantBy := byID(cur.policy), byID(wantVals)
		for _, c := range moves {
			t := transit[c]
			type tv struct {
				old, new PolicyValue
				had, has bool
			}
			tk := map[PolicyKey]*tv{}
			for _, k := range curBy[c.oid] {
				k2 := k
				k2.Identity = t
				tk[k2] = &tv{old: cur.policy[k], had: true}
			}
			for _, k := range wantBy[c.nid] {
				k2 := k
				k2.Identity = t
				if e := tk[k2]; e != nil {
					e.new, e.has = wantVals[k], true
				} else {
					tk[k2] = &tv{new: wantVals[k], has: true}
				}
			}
			for k, e := range tk {
				if e.had {
					early = append(early, policyChange{key: k, new: e.old, has: true})
				}
				if e.had != e.has || e.old != e.new {
					ch := policyChange{key: k, old: e.old, new: e.new, had: e.had, has: e.has}
					if ch.has && (!ch.had || ch.new.Verdict >= ch.old.Verdict) {
						up = append(up, ch)
					} else {
						down = append(down, ch)
					}
				}
				if e.has {
					late = append(late, policyChange{key: k, old: e.new, had: true})
				}
			}
		}
	}
	byKey := func(a, b policyChange) int { return comparePolicyKeys(a.key, b.key) }

	// phaseUnreachable
	slices.SortFunc(early, byKey)
	for _, c := range early {
		ops = append(ops, c.op(phaseUnreachable))
	}

	// phaseDivert: every prefix gets the identity its cell is parked on
	// (the old one, or a transit copy of it).
	for _, p := range union {
		if cid, ok := cur.ipcache[p]; !ok || cid != parked(p) {
			ops = append(ops, syncOp{Phase: phaseDivert, Kind: opPutIPCache, Prefix: p, Identity: parked(p)})
		}
	}

	// phaseUpgrade
	slices.SortFunc(up, func(a, b policyChange) int {
		return cmp.Or(cmp.Compare(b.new.Verdict, a.new.Verdict), cmp.Compare(a.key.lookupRank(), b.key.lookupRank()), byKey(a, b))
	})
	for _, c := range up {
		ops = append(ops, c.op(phaseUpgrade))
	}

	// phaseEnforce
	for _, id := range both {
		w := widened[id]
		e := w
		e.Flags = w.Flags&^epFlagEnforced | flags[id]&epFlagEnforced
		if e != w {
			widened[id] = e
			ops = append(ops, syncOp{Phase: phaseEnforce, Kind: opPutEndpoint, Endpoint: id, Config: e})
		}
	}

	// phaseDowngrade
	slices.SortFunc(down, func(a, b policyChange) int {
		return cmp.Or(cmp.Compare(a.old.Verdict, b.old.Verdict), cmp.Compare(b.key.lookupRank(), a.key.lookupRank()), byKey(a, b))
	})
	for _, c := range down {
		ops = append(ops, c.op(phaseDowngrade))
	}
	for _, k := range cur.misplaced {
		ops = append(ops, syncOp{Phase: phaseDowngrade, Kind: opDeleteMisplaced, Key: k})
	}

	// phaseLand: the new identities (each transit identity holds its new
	// identity's entries by now), then the prefixes that go.
	for _, p := range union {
		id, ok := want.IPCache[p]
		if ok && id != parked(p) {
			ops = append(ops, syncOp{Phase: phaseLand, Kind: opPutIPCache, Prefix: p, Identity: id})
		}
	}
	for _, p := range union {
		if _, ok := want.IPCache[p]; !ok {
			ops = append(ops, syncOp{Phase: phaseLand, Kind: opDeleteIPCache, Prefix: p})
		}
	}

	// phaseUnreachableLate
	slices.SortFunc(late, byKey)
	for _, c := range late {
		ops = append(ops, c.op(phaseUnreachableLate))
	}

	// phaseFinal
	var ids []uint32
	for id := range want.Endpoints {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		cfg := moatEndpointConfig{Identity: uint32(want.Endpoints[id].Identity), Flags: flags[id], Slot: slots[id]}
		ops = append(ops, syncOp{Phase: phaseFinal, Kind: opPutEndpoint, Endpoint: id, Config: cfg, Final: true})
	}
	var addrs []netip.Addr
	for a, id := range want.Local {
		if cid, ok := cur.local[a]; !ok || cid != id {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		ops = append(ops, syncOp{Phase: phaseFinal, Kind: opPutLocal, Addr: a, Endpoint: want.Local[a]})
	}
	addrs = addrs[:0]
	for a := range cur.local {
		if _, ok := want.Local[a]; !ok {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		ops = append(ops, syncOp{Phase: phaseFinal, Kind: opDeleteLocal, Addr: a})
	}
	return ops
}
