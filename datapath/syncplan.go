package datapath

import (
	"cmp"
	"maps"
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
// endpoint its counter slot). It is pure and deterministic. The phases run
// in the order of their constants (see there for each one's invariant).
func planSync(cur *syncState, want *MapState, slots map[uint32]uint32) []syncOp {
	p := newSyncPlanner(cur, want, slots)
	p.removeEndpoints()
	p.widen()
	p.classifyEntries()
	p.findMoves()
	p.emit(phaseUnreachable, p.early, byKey)
	p.divert()
	p.emit(phaseUpgrade, p.up, upgradeOrder)
	p.enforce()
	p.emit(phaseDowngrade, p.down, downgradeOrder)
	for _, k := range cur.misplaced {
		p.ops = append(p.ops, syncOp{Phase: phaseDowngrade, Kind: opDeleteMisplaced, Key: k})
	}
	p.land()
	p.emit(phaseUnreachableLate, p.late, byKey)
	p.final()
	return p.ops
}

// syncPlanner holds what the phases of one planSync share.
type syncPlanner struct {
	cur   *syncState
	want  *MapState
	slots map[uint32]uint32
	flags map[uint32]uint32 // each wanted endpoint's final flags
	ops   []syncOp

	both    []uint32                      // endpoints in cur and want, sorted
	widened map[uint32]moatEndpointConfig // their config as the phases leave it

	// Policy entries that change, by the phase that changes them.
	early, up, down, late []policyChange

	union   []netip.Prefix // ipcache prefixes, old and new, longest first
	cells   map[netip.Prefix]cell
	transit map[cell]policy.ID
}

func newSyncPlanner(cur *syncState, want *MapState, slots map[uint32]uint32) *syncPlanner {
	p := &syncPlanner{cur: cur, want: want, slots: slots, flags: endpointFlags(want), widened: map[uint32]moatEndpointConfig{}}
	for id := range want.Endpoints {
		if _, ok := cur.endpoints[id]; ok {
			p.both = append(p.both, id)
		}
	}
	slices.Sort(p.both)
	return p
}

// live reports whether ep has a config from before the first policy write
// to after the last one (new endpoints get theirs in phaseFinal, gone ones
// lose it in phaseRemoveEndpoints).
func (p *syncPlanner) live(ep uint32) bool {
	_, a := p.cur.endpoints[ep]
	_, b := p.want.Endpoints[ep]
	return a && b
}

func byKey(a, b policyChange) int { return comparePolicyKeys(a.key, b.key) }

// upgradeOrder: highest new verdict first, then the lookup that wins ties.
func upgradeOrder(a, b policyChange) int {
	return cmp.Or(cmp.Compare(b.new.Verdict, a.new.Verdict), cmp.Compare(a.key.lookupRank(), b.key.lookupRank()), byKey(a, b))
}

// downgradeOrder: lowest old verdict first, then the lookup that loses ties.
func downgradeOrder(a, b policyChange) int {
	return cmp.Or(cmp.Compare(a.old.Verdict, b.old.Verdict), cmp.Compare(b.key.lookupRank(), a.key.lookupRank()), byKey(a, b))
}

// emit appends the changes, sorted, as operations of phase ph.
func (p *syncPlanner) emit(ph syncPhase, changes []policyChange, order func(a, b policyChange) int) {
	slices.SortFunc(changes, order)
	for _, c := range changes {
		p.ops = append(p.ops, c.op(ph))
	}
}

func (p *syncPlanner) removeEndpoints() {
	var gone []uint32
	for id := range p.cur.endpoints {
		if _, ok := p.want.Endpoints[id]; !ok {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		p.ops = append(p.ops, syncOp{Phase: phaseRemoveEndpoints, Kind: opDeleteEndpoint, Endpoint: id})
	}
}

func (p *syncPlanner) widen() {
	for _, id := range p.both {
		c := p.cur.endpoints[id]
		w := c
		w.Flags = widenFlags(c.Flags, p.flags[id])
		p.widened[id] = w
		if w != c {
			p.ops = append(p.ops, syncOp{Phase: phaseWiden, Kind: opPutEndpoint, Endpoint: id, Config: w})
		}
	}
}

// classifyEntries sorts the entries that change into the phases that
// change them: unreachable before (new endpoint, or an identity no
// current ipcache entry maps to), unreachable after (an identity the new
// ipcache no longer maps to), else upgrades and downgrades.
func (p *syncPlanner) classifyEntries() {
	curIDs := map[policy.ID]bool{policy.IDWorld: true} // world: every lookup's default
	for _, id := range p.cur.ipcache {
		curIDs[id] = true
	}
	wantIDs := map[policy.ID]bool{policy.IDWorld: true}
	for _, id := range p.want.IPCache {
		wantIDs[id] = true
	}
	add := func(c policyChange) {
		id := c.key.Identity
		switch {
		case !p.live(c.key.Endpoint) || (id != policy.IDAny && !curIDs[id]):
			p.early = append(p.early, c)
		case id != policy.IDAny && !wantIDs[id]:
			p.late = append(p.late, c)
		default:
			p.middle(c)
		}
	}
	for k, de := range p.want.Policy {
		if v, ok := p.cur.policy[k]; !ok || v != de.Value {
			add(policyChange{key: k, old: v, new: de.Value, had: ok, has: true})
		}
	}
	for k, v := range p.cur.policy {
		if _, ok := p.want.Policy[k]; !ok {
			add(policyChange{key: k, old: v, had: true})
		}
	}
}

// middle files a change of a reachable entry as an upgrade (a verdict that
// rises, or a payload that changes at an equal verdict) or a downgrade.
func (p *syncPlanner) middle(c policyChange) {
	if c.has && (!c.had || c.new.Verdict >= c.old.Verdict) {
		p.up = append(p.up, c)
	} else {
		p.down = append(p.down, c)
	}
}

// findMoves finds the ipcache cells whose identity changes and gives a
// transit identity, with its entries, to each (old, new) pair that needs
// one. A cell needs one only where, at some endpoint, the entries of its
// old or new identity or the every-identity entries change in the
// upgrade or downgrade phases, or the enforced bits change: otherwise it
// moves in one write, in phaseDivert (its new identity's entries, if new,
// are written in phaseUnreachable before; its old identity's, if they go,
// are deleted in phaseUnreachableLate after). Transit numbers start at
// IDTransitFlag, past any number the maps hold (a failed Sync may have
// left transit entries).
func (p *syncPlanner) findMoves() {
	for q := range p.cur.ipcache {
		p.union = append(p.union, q)
	}
	for q := range p.want.IPCache {
		if _, ok := p.cur.ipcache[q]; !ok {
			p.union = append(p.union, q)
		}
	}
	slices.SortFunc(p.union, comparePrefixesLongestFirst)
	p.cells = make(map[netip.Prefix]cell, len(p.union))
	curIdx, wantIdx := newPrefixIndex(p.cur.ipcache), newPrefixIndex(p.want.IPCache)
	var moves []cell
	moving := map[cell]bool{}
	for _, q := range p.union {
		c := cell{curIdx.longest(q), wantIdx.longest(q)}
		p.cells[q] = c
		if c.oid != c.nid && !moving[c] {
			moving[c] = true
			moves = append(moves, c)
		}
	}

	busy := map[uint32]map[policy.ID]bool{}
	for _, list := range [][]policyChange{p.up, p.down} {
		for _, c := range list {
			m := busy[c.key.Endpoint]
			if m == nil {
				m = map[policy.ID]bool{}
				busy[c.key.Endpoint] = m
			}
			m[c.key.Identity] = true
		}
	}
	for _, id := range p.both {
		if p.cur.endpoints[id].Flags&epFlagEnforced != p.flags[id]&epFlagEnforced {
			busy[id] = map[policy.ID]bool{policy.IDAny: true} // every packet of the endpoint
		}
	}
	moves = slices.DeleteFunc(moves, func(c cell) bool {
		for _, m := range busy {
			if m[c.oid] || m[c.nid] || m[policy.IDAny] {
				return false
			}
		}
		return true
	})
	slices.SortFunc(moves, func(a, b cell) int { return cmp.Or(cmp.Compare(a.oid, b.oid), cmp.Compare(a.nid, b.nid)) })

	held := map[policy.ID]bool{}
	for _, id := range p.cur.ipcache {
		held[id] = true
	}
	for k := range p.cur.policy {
		held[k.Identity] = true
	}
	p.transit = make(map[cell]policy.ID, len(moves))
	next := policy.IDTransitFlag
	for _, c := range moves {
		for held[next] {
			next++
		}
		p.transit[c] = next
		next++
	}
	p.transitEntries(moves)
}

// transitEntries plans each transit identity's entries: written
// (unreachable) as copies of the old identity's, moved to the new
// identity's with the other upgrades and downgrades, deleted once no
// address is parked on them.
func (p *syncPlanner) transitEntries(moves []cell) {
	if len(moves) == 0 {
		return
	}
	wantVals := make(map[PolicyKey]PolicyValue, len(p.want.Policy))
	for k, de := range p.want.Policy {
		wantVals[k] = de.Value
	}
	byID := func(m map[PolicyKey]PolicyValue) map[policy.ID][]PolicyKey {
		out := map[policy.ID][]PolicyKey{}
		for k := range m {
			if p.live(k.Endpoint) {
				out[k.Identity] = append(out[k.Identity], k)
			}
		}
		return out
	}
	curBy, wantBy := byID(p.cur.policy), byID(wantVals)
	type transitEntry struct {
		old, new PolicyValue
		had, has bool
	}
	for _, c := range moves {
		t := p.transit[c]
		entries := map[PolicyKey]*transitEntry{}
		for _, k := range curBy[c.oid] {
			tk := k
			tk.Identity = t
			entries[tk] = &transitEntry{old: p.cur.policy[k], had: true}
		}
		for _, k := range wantBy[c.nid] {
			tk := k
			tk.Identity = t
			if e := entries[tk]; e != nil {
				e.new, e.has = wantVals[k], true
			} else {
				entries[tk] = &transitEntry{new: wantVals[k], has: true}
			}
		}
		for k, e := range entries {
			if e.had {
				p.early = append(p.early, policyChange{key: k, new: e.old, has: true})
			}
			if e.had != e.has || e.old != e.new {
				p.middle(policyChange{key: k, old: e.old, new: e.new, had: e.had, has: e.has})
			}
			if e.has {
				p.late = append(p.late, policyChange{key: k, old: e.new, had: true})
			}
		}
	}
}

// parked returns the identity prefix q has from phaseDivert to phaseLand:
// its cell's old identity when it does not move, its transit identity,
// or (a move that needs none) its new identity.
func (p *syncPlanner) parked(q netip.Prefix) policy.ID {
	c := p.cells[q]
	if c.oid == c.nid {
		return c.oid
	}
	if t, ok := p.transit[c]; ok {
		return t
	}
	return c.nid
}

func (p *syncPlanner) divert() {
	for _, q := range p.union {
		if cid, ok := p.cur.ipcache[q]; !ok || cid != p.parked(q) {
			p.ops = append(p.ops, syncOp{Phase: phaseDivert, Kind: opPutIPCache, Prefix: q, Identity: p.parked(q)})
		}
	}
}

func (p *syncPlanner) enforce() {
	for _, id := range p.both {
		w := p.widened[id]
		e := w
		e.Flags = w.Flags&^epFlagEnforced | p.flags[id]&epFlagEnforced
		if e != w {
			p.widened[id] = e
			p.ops = append(p.ops, syncOp{Phase: phaseEnforce, Kind: opPutEndpoint, Endpoint: id, Config: e})
		}
	}
}

func (p *syncPlanner) land() {
	for _, q := range p.union {
		if id, ok := p.want.IPCache[q]; ok && id != p.parked(q) {
			p.ops = append(p.ops, syncOp{Phase: phaseLand, Kind: opPutIPCache, Prefix: q, Identity: id})
		}
	}
	for _, q := range p.union {
		if _, ok := p.want.IPCache[q]; !ok {
			p.ops = append(p.ops, syncOp{Phase: phaseLand, Kind: opDeleteIPCache, Prefix: q})
		}
	}
}

func (p *syncPlanner) final() {
	ids := slices.Sorted(maps.Keys(p.want.Endpoints))
	for _, id := range ids {
		cfg := moatEndpointConfig{Identity: uint32(p.want.Endpoints[id].Identity), Flags: p.flags[id], Slot: p.slots[id]}
		p.ops = append(p.ops, syncOp{Phase: phaseFinal, Kind: opPutEndpoint, Endpoint: id, Config: cfg, Final: true})
	}
	var addrs []netip.Addr
	for a, id := range p.want.Local {
		if cid, ok := p.cur.local[a]; !ok || cid != id {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		p.ops = append(p.ops, syncOp{Phase: phaseFinal, Kind: opPutLocal, Addr: a, Endpoint: p.want.Local[a]})
	}
	addrs = addrs[:0]
	for a := range p.cur.local {
		if _, ok := p.want.Local[a]; !ok {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		p.ops = append(p.ops, syncOp{Phase: phaseFinal, Kind: opDeleteLocal, Addr: a})
	}
}
