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
// The phases below keep it under one precondition, which stable identity
// numbers provide (policy.LocalAllocator, and label-set identities held
// while an endpoint uses them): an identity number present in both states
// means the same thing in both, and an address whose identity changes
// moves into an identity whose entries are all new, or out of one whose
// entries all go, or between identities whose entries (and the
// every-identity entries that cover it) do not change. TestSyncMakeBeforeBreak
// checks the invariant over random changes through the real compiler.
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
	// phaseIPCacheAdd writes new and changed ipcache entries, longest
	// prefix first (host entries before the trie), so that an address
	// moves from its old identity straight to its new one: a longer new
	// prefix is in place before a shorter one that covers it changes, and
	// no old prefix is gone yet.
	phaseIPCacheAdd
	// phaseUpgrade writes the entries, reachable before and after, whose
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
	// phaseIPCacheDelete deletes the ipcache entries that are gone,
	// shortest prefix first (host entries last): an address falls back to
	// its new identity, never to an older, shorter prefix's.
	phaseIPCacheDelete
	// phaseUnreachableLate deletes the entries of identities that no
	// ipcache entry maps to any more.
	phaseUnreachableLate
	// phaseFinal writes each endpoint's final config (exact flags, which
	// no longer announce the removed shapes; identity; counter slot; new
	// revisions for changed directions, so tracked flows re-check) and
	// the local endpoint addresses. New endpoints get their config here,
	// after all their entries and ipcache entries are in place.
	phaseFinal
)

var syncPhaseNames = [...]string{"remove-endpoints", "widen", "unreachable", "ipcache-add", "upgrade", "enforce", "downgrade", "ipcache-delete", "unreachable-late", "final"}

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

// planSync computes the operations that take the maps from cur to want
// (whose policy values carry their rule indices; slots gives each wanted
// endpoint its counter slot). It is pure and deterministic.
func planSync(cur *syncState, want *MapState, slots map[uint32]uint32) []syncOp {
	var ops []syncOp
	flags := endpointFlags(want)

	// Identities the ipcache maps to, before and after (world is the
	// default of every lookup).
	curIDs := map[policy.ID]bool{policy.IDWorld: true}
	for _, id := range cur.ipcache {
		curIDs[id] = true
	}
	wantIDs := map[policy.ID]bool{policy.IDWorld: true}
	for _, id := range want.IPCache {
		wantIDs[id] = true
	}
	// live: endpoints with a config through the middle phases.
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
	byKey := func(a, b policyChange) int { return comparePolicyKeys(a.key, b.key) }

	// phaseUnreachable
	slices.SortFunc(early, byKey)
	for _, c := range early {
		ops = append(ops, c.op(phaseUnreachable))
	}

	// phaseIPCacheAdd
	var ipAdd, ipDel []netip.Prefix
	for p, id := range want.IPCache {
		if cid, ok := cur.ipcache[p]; !ok || cid != id {
			ipAdd = append(ipAdd, p)
		}
	}
	for p := range cur.ipcache {
		if _, ok := want.IPCache[p]; !ok {
			ipDel = append(ipDel, p)
		}
	}
	slices.SortFunc(ipAdd, comparePrefixesLongestFirst)
	for _, p := range ipAdd {
		ops = append(ops, syncOp{Phase: phaseIPCacheAdd, Kind: opPutIPCache, Prefix: p, Identity: want.IPCache[p]})
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

	// phaseIPCacheDelete
	slices.SortFunc(ipDel, func(a, b netip.Prefix) int { return -comparePrefixesLongestFirst(a, b) })
	for _, p := range ipDel {
		ops = append(ops, syncOp{Phase: phaseIPCacheDelete, Kind: opDeleteIPCache, Prefix: p})
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
