package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/moatnet/moat/policy"
)

// syncState mirrors what Sync last wrote, so that a Sync only touches the
// entries that change. It is loaded from the (possibly pinned) maps at Open.
type syncState struct {
	endpoints map[uint32]moatEndpointConfig
	names     map[uint32]EndpointKey
	policy    map[PolicyKey]PolicyValue
	ipcache   map[netip.Prefix]policy.ID
	local     map[netip.Addr]uint32
	rules     map[RuleKey]uint32
	ruleInfo  map[uint32]RuleInfo
	nextRev   uint32
	gen       uint32 // moat_generation as last published
	// dirtyRules holds rule indices freed since their counters were last
	// zeroed; no new rule takes them until scrubRules has zeroed them.
	// scrubbedRules holds free indices known to be zero, which a new rule
	// takes as they are; any other free index (never used by this
	// process: an earlier agent may have left counts in it) is zeroed
	// when a rule takes it.
	// scrubbingRules are the dirty indices that the background scrub is
	// zeroing right now (without d.mu); they stay dirty until it is done.
	dirtyRules     map[uint32]bool
	scrubbedRules  map[uint32]bool
	scrubbingRules map[uint32]bool
	// misplaced holds trie entries that belong in the hash map, left by
	// an agent version that kept every entry in the trie; the next Sync
	// writes their replacements into the hash and then deletes them.
	misplaced []PolicyKey
	// owed holds the endpoint directions whose policy entries were
	// written or deleted but whose revision has not been bumped yet: a
	// Sync that fails partway leaves them here, and the next Sync bumps
	// them even when it finds nothing left to write.
	owed map[dirKey]bool
}

func (s *syncState) load(objs *moatObjects) error {
	s.endpoints = map[uint32]moatEndpointConfig{}
	s.names = map[uint32]EndpointKey{}
	s.policy = map[PolicyKey]PolicyValue{}
	s.ipcache = map[netip.Prefix]policy.ID{}
	s.local = map[netip.Addr]uint32{}
	s.rules = map[RuleKey]uint32{}
	s.ruleInfo = map[uint32]RuleInfo{}
	s.owed = map[dirKey]bool{}
	s.dirtyRules = map[uint32]bool{}
	s.scrubbedRules = map[uint32]bool{}
	s.scrubbingRules = map[uint32]bool{}
	s.nextRev = 1
	zero := uint32(0)
	if err := objs.MoatGeneration.Lookup(&zero, &s.gen); err != nil {
		return fmt.Errorf("read generation map: %w", err)
	}

	var id uint32
	var cfg moatEndpointConfig
	it := objs.MoatEndpoints.Iterate()
	for it.Next(&id, &cfg) {
		s.endpoints[id] = cfg
		s.nextRev = max(s.nextRev, cfg.IngressRev+1, cfg.EgressRev+1)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read endpoint map: %w", err)
	}
	s.misplaced = nil
	adopt := func(k PolicyKey, pv moatPolicyVal) {
		v := policyValueFromBPF(pv)
		s.policy[k] = v
		if v.Rule != 0 {
			rk := ruleKeyOf(k)
			s.rules[rk] = v.Rule
			s.ruleInfo[v.Rule] = RuleInfo{RuleKey: rk}
		}
	}
	var pk moatPolicyKey
	var pv moatPolicyVal
	pit := objs.MoatPolicy.Iterate()
	for pit.Next(&pk, &pv) {
		k, err := policyKeyFromBPF(pk)
		if err != nil {
			return err
		}
		if k.inHash() {
			s.misplaced = append(s.misplaced, k)
			continue
		}
		adopt(k, pv)
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("read policy map: %w", err)
	}
	var hk moatPolicyHkey
	hit := objs.MoatPolicyH.Iterate()
	for hit.Next(&hk, &pv) {
		k, err := policyKeyFromHash(hk)
		if err != nil {
			return err
		}
		adopt(k, pv)
	}
	if err := hit.Err(); err != nil {
		return fmt.Errorf("read policy hash map: %w", err)
	}
	var ik moatIpcacheKey
	var iv moatIpcacheVal
	iit := objs.MoatIpcache.Iterate()
	for iit.Next(&ik, &iv) {
		p, err := ipcachePrefixFromBPF(ik)
		if err != nil {
			return err
		}
		s.ipcache[p] = policy.ID(iv.Identity)
	}
	if err := iit.Err(); err != nil {
		return fmt.Errorf("read ipcache map: %w", err)
	}
	var ihk moatIpcacheHostKey
	ihit := objs.MoatIpcacheH.Iterate()
	for ihit.Next(&ihk, &iv) {
		s.ipcache[hostPrefixFromBPF(ihk)] = policy.ID(iv.Identity)
	}
	if err := ihit.Err(); err != nil {
		return fmt.Errorf("read ipcache host map: %w", err)
	}
	var lk moatIpcacheHostKey
	var lv uint32
	lit := objs.MoatLocalEp.Iterate()
	for lit.Next(&lk, &lv) {
		s.local[netip.AddrFrom16(lk.Addr).Unmap()] = lv
	}
	if err := lit.Err(); err != nil {
		return fmt.Errorf("read local endpoint map: %w", err)
	}
	return nil
}

// ruleKeyOf reconstructs a rule key from a map key after an adoption; the
// port range is only known up to the block, which is enough to keep rule
// indices stable for single-block entries and harmless otherwise.
func ruleKeyOf(k PolicyKey) RuleKey {
	r := policy.PortRange{}
	if k.Ports.Bits > 0 {
		size := uint32(1) << (16 - k.Ports.Bits)
		r = policy.PortRange{From: k.Ports.Port, To: uint16(uint32(k.Ports.Port) + size - 1)}
	}
	return RuleKey{Endpoint: k.Endpoint, Direction: k.Direction, L4Key: policy.L4Key{Identity: k.Identity, Proto: k.Proto, Ports: r}}
}

type dirKey struct {
	ep  uint32
	dir policy.Direction
}

// Sync writes plan into the maps for the endpoints in ifaces (endpoint ->
// host-side veth ifindex), in three steps: (1) compute the desired state
// and give it rule indices and counter slots; (2) compute the ordered map
// operations from what the maps hold to that state (planSync, pure: its
// phases and their invariant are in syncplan.go; every packet's decision
// stays its old or its new one after each operation) and apply them in
// order, the endpoints' final configs taking new revisions where entries
// changed so that their tracked flows re-check the final policy once;
// (3) bookkeeping; and last, also after a failure, a new generation, which
// sends every tracked flow through that check.
func (d *Datapath) Sync(plan *policy.Plan, ifaces map[EndpointKey]int, proxies ProxyPorts) (err error) {
	want, err := DesiredState(plan, ifaces, proxies)
	if err != nil {
		return fmt.Errorf("sync datapath: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		if gerr := d.bumpGeneration(); gerr != nil {
			err = errors.Join(err, gerr)
		}
	}()
	// 1. Desired state: rule indices and counter slots.
	liveRules, err := d.assignRules(want)
	if err != nil {
		return fmt.Errorf("sync datapath: %w", err)
	}
	slots, err := d.assignSlots(want)
	if err != nil {
		return fmt.Errorf("sync datapath: %w", err)
	}

	// 2. The map operations, in the order that keeps every packet's
	// decision its old or its new one (syncplan.go), applied in order.
	if err := d.apply(planSync(&d.state, want, slots), want); err != nil {
		return err
	}

	// 3. Bookkeeping.
	d.forget(want, liveRules)
	// An upgrade over maps of another layout swaps the programs now that
	// the new maps hold the plan (upgrade.go).
	return d.finishUpgrade()
}

// assignRules gives want's policy values their rule indices: stable per
// (endpoint, direction, L4 key); a new rule takes the lowest index that no
// current rule holds and that is not waiting to be zeroed (freed indices
// are zeroed after the Sync, see scrubSoon), zeroing it first unless it is
// known to be zero. It returns the rule indices in use after the Sync.
func (d *Datapath) assignRules(want *MapState) (map[RuleKey]uint32, error) {
	s := &d.state
	if err := d.ensureCleanRules(want); err != nil {
		return nil, err
	}
	var freshRules []uint32
	liveRules := map[RuleKey]uint32{}
	ruleAlloc := newLowestFree(ruleSlots - 1)
	for _, idx := range s.rules {
		ruleAlloc.used[idx] = true
	}
	for idx := range s.dirtyRules {
		ruleAlloc.used[idx] = true
	}
	for k, de := range want.Policy {
		idx, ok := liveRules[de.Rule]
		if !ok {
			if idx, ok = s.rules[de.Rule]; !ok {
				if idx, ok = ruleAlloc.take(); !ok {
					return nil, fmt.Errorf("allocate rule index: all %d in use", ruleSlots-1)
				}
				if s.scrubbedRules[idx] {
					delete(s.scrubbedRules, idx)
				} else {
					freshRules = append(freshRules, idx)
				}
			}
			liveRules[de.Rule] = idx
			s.ruleInfo[idx] = RuleInfo{Endpoint: want.Endpoints[de.Rule.Endpoint].Endpoint, RuleKey: de.Rule, Entry: de.Entry}
		}
		de.Value.Rule = idx
		want.Policy[k] = de
	}
	if err := zeroCounters[moatRuleStats](d.objs.MoatRuleStats, freshRules); err != nil {
		return nil, err
	}
	if s.owed == nil {
		s.owed = map[dirKey]bool{}
	}
	return liveRules, nil
}

// forget drops what a successful Sync made stale: an endpoint gone owes
// nothing (a new one on its ifindex starts with fresh revisions), and the
// rule indices no entry uses any more are zeroed soon, then reused.
func (d *Datapath) forget(want *MapState, liveRules map[RuleKey]uint32) {
	s := &d.state
	for dk := range s.owed {
		if _, ok := want.Endpoints[dk.ep]; !ok {
			delete(s.owed, dk)
		}
	}
	for rk, idx := range s.rules {
		if liveRules[rk] != idx {
			delete(s.ruleInfo, idx)
			s.dirtyRules[idx] = true
		}
	}
	s.rules = liveRules
	d.scrubSoon()
}

// batchable reports whether b can go into one map batch after a: the same
// operation on the same map in the same phase (a batch keeps its order).
func batchable(a, b *syncOp) bool {
	if a.Kind != b.Kind || a.Phase != b.Phase {
		return false
	}
	switch a.Kind {
	case opPutPolicy, opDeletePolicy:
		return a.Key.inHash() == b.Key.inHash()
	case opPutIPCache, opDeleteIPCache:
		return isHostPrefix(a.Prefix) == isHostPrefix(b.Prefix)
	case opDeleteMisplaced:
		return true
	}
	return false
}

// apply performs ops in order and keeps d.state in step with what was
// written, also when a write fails partway. Entries written or deleted owe
// their endpoint direction a new revision, which the endpoint's final
// write takes (and a failed Sync leaves owed for the next one).
func (d *Datapath) apply(ops []syncOp, want *MapState) error {
	s := &d.state
	o := &d.objs
	for i := 0; i < len(ops); {
		j := i + 1
		for j < len(ops) && batchable(&ops[i], &ops[j]) {
			j++
		}
		run := ops[i:j]
		i = j
		switch run[0].Kind {
		case opPutPolicy, opDeletePolicy:
			var b policyBatch
			vals := make(map[PolicyKey]PolicyValue, len(run))
			for _, op := range run {
				b.add(op.Key, op.Value)
				vals[op.Key] = op.Value
				s.owed[dirKey{op.Key.Endpoint, op.Key.Direction}] = true // before: a failed write may have changed the map
			}
			if run[0].Kind == opPutPolicy {
				if err := b.put(o, func(k PolicyKey) { s.policy[k] = vals[k] }); err != nil {
					return fmt.Errorf("sync policy (%s): %w", run[0].Phase, err)
				}
			} else if err := b.delete(o, func(k PolicyKey) { delete(s.policy, k) }); err != nil {
				return fmt.Errorf("sync: delete policy (%s): %w", run[0].Phase, err)
			}
		case opDeleteMisplaced:
			keys := make([]moatPolicyKey, len(run))
			for n, op := range run {
				keys[n] = op.Key.bpf()
			}
			n, err := deleteMany(o.MoatPolicy, keys)
			s.misplaced = s.misplaced[n:]
			if err != nil {
				return fmt.Errorf("sync: delete policy entries of an older layout: %w", err)
			}
		case opPutIPCache, opDeleteIPCache:
			var b ipcacheBatch
			vals := make(map[netip.Prefix]policy.ID, len(run))
			for _, op := range run {
				b.add(op.Prefix, op.Identity)
				vals[op.Prefix] = op.Identity
			}
			if run[0].Kind == opPutIPCache {
				if err := b.put(o, s, vals); err != nil {
					return fmt.Errorf("sync ipcache: %w", err)
				}
			} else if err := b.delete(o, s); err != nil {
				return fmt.Errorf("sync: delete ipcache: %w", err)
			}
		case opPutEndpoint:
			for _, op := range run {
				if err := d.applyEndpoint(op, want); err != nil {
					return err
				}
			}
			continue // applyEndpoint counts the configs it writes
		case opDeleteEndpoint:
			for _, op := range run {
				id := op.Endpoint
				if err := o.MoatEndpoints.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("sync: delete endpoint ifindex %d: %w", id, err)
				}
				delete(s.endpoints, id)
				delete(s.names, id)
			}
		case opPutLocal:
			// The local endpoints' addresses, for local_delivery (which
			// also needs the destination's own CT entry, so a new address
			// is never used before that endpoint's programs have let a
			// flow in).
			for _, op := range run {
				if err := o.MoatLocalEp.Put(moatIpcacheHostKey{Addr: op.Addr.As16()}, op.Endpoint); err != nil {
					return fmt.Errorf("sync local endpoint %s (ifindex %d): %w", op.Addr, op.Endpoint, err)
				}
				s.local[op.Addr] = op.Endpoint
			}
		case opDeleteLocal:
			for _, op := range run {
				if err := o.MoatLocalEp.Delete(moatIpcacheHostKey{Addr: op.Addr.As16()}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return fmt.Errorf("sync: delete local endpoint %s: %w", op.Addr, err)
				}
				delete(s.local, op.Addr)
			}
		}
		d.writes.add(run[0].Kind, len(run))
	}
	return nil
}

// applyEndpoint writes an endpoint config. A write before the final one
// keeps the current revisions (turning enforcement on owes the direction
// a new one). The final write takes fresh revisions for a new endpoint
// (or a new one on a reused ifindex) and for every owed direction, which
// makes the endpoint's tracked flows re-check the final policy once.
func (d *Datapath) applyEndpoint(op syncOp, want *MapState) error {
	s := &d.state
	id := op.Endpoint
	es := want.Endpoints[id]
	cur, exists := s.endpoints[id]
	next := op.Config
	next.IngressRev, next.EgressRev = cur.IngressRev, cur.EgressRev
	in, eg := dirKey{id, policy.Ingress}, dirKey{id, policy.Egress}
	if next.Flags&^cur.Flags&epFlagIngressEnforced != 0 {
		s.owed[in] = true
	}
	if next.Flags&^cur.Flags&epFlagEgressEnforced != 0 {
		s.owed[eg] = true
	}
	if op.Final {
		if !exists || s.names[id] != es.Endpoint {
			next.IngressRev, next.EgressRev = d.rev(), d.rev()
		}
		if s.owed[in] {
			next.IngressRev = d.rev()
		}
		if s.owed[eg] {
			next.EgressRev = d.rev()
		}
	}
	if exists && cur == next {
		if op.Final {
			s.names[id] = es.Endpoint
		}
		return nil
	}
	if err := d.putEndpoint(id, &next); err != nil {
		return fmt.Errorf("sync endpoint %s (ifindex %d, %s): %w", es.Endpoint, id, op.Phase, err)
	}
	d.writes.add(opPutEndpoint, 1)
	s.endpoints[id] = next
	if op.Final {
		s.names[id] = es.Endpoint
		delete(s.owed, in)
		delete(s.owed, eg)
	}
	return nil
}

// ensureCleanRules zeroes the freed rule indices now when the free indices
// not waiting to be zeroed cannot hold want's new rules (normally freed
// indices are zeroed in the background after the Sync that freed them).
func (d *Datapath) ensureCleanRules(want *MapState) error {
	s := &d.state
	if len(s.dirtyRules) == 0 {
		return nil
	}
	fresh := map[RuleKey]bool{}
	for _, de := range want.Policy {
		if _, ok := s.rules[de.Rule]; !ok {
			fresh[de.Rule] = true
		}
	}
	if len(fresh) <= ruleSlots-1-len(s.rules)-len(s.dirtyRules) {
		return nil
	}
	return d.scrubRules()
}

// scrubRules zeroes the counters of the freed rule indices, which makes
// them available to new rules. The caller holds d.mu.
func (d *Datapath) scrubRules() error {
	s := &d.state
	if len(s.dirtyRules) == 0 {
		return nil
	}
	idxs := make([]uint32, 0, len(s.dirtyRules))
	for idx := range s.dirtyRules {
		if !s.scrubbingRules[idx] { // the background scrub finishes those
			idxs = append(idxs, idx)
		}
	}
	if err := zeroCounters[moatRuleStats](d.objs.MoatRuleStats, idxs); err != nil {
		return fmt.Errorf("zero the counters of freed rules: %w", err)
	}
	for _, idx := range idxs {
		delete(s.dirtyRules, idx)
		s.scrubbedRules[idx] = true
	}
	return nil
}

// Settle waits until the background work that a Sync started (zeroing
// the counters of freed rules) is done. Benchmarks use it to time one
// replacement on an otherwise idle datapath.
func (d *Datapath) Settle() { d.scrubs.Wait() }

// scrubSoon zeroes the freed rule indices after the running Sync returns,
// so that replacing a policy does not wait for counters. The indices stay
// in dirtyRules (no Sync hands them out) while they are zeroed without
// d.mu, so a Sync can run at the same time. The caller holds d.mu.
func (d *Datapath) scrubSoon() {
	if len(d.state.dirtyRules) == 0 || d.scrubbing {
		return
	}
	d.scrubbing = true
	d.scrubs.Add(1)
	go func() {
		defer d.scrubs.Done()
		d.mu.Lock()
		idxs := make([]uint32, 0, len(d.state.dirtyRules))
		for idx := range d.state.dirtyRules {
			idxs = append(idxs, idx)
			d.state.scrubbingRules[idx] = true
		}
		closed := d.closed
		d.mu.Unlock()
		var err error
		if !closed {
			err = zeroCounters[moatRuleStats](d.objs.MoatRuleStats, idxs)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.scrubbing = false
		for _, idx := range idxs {
			delete(d.state.scrubbingRules, idx)
		}
		if closed {
			return
		}
		if err != nil {
			d.log.Warn("zeroing freed rule counters failed; retried after the next sync", "err", err)
			return
		}
		for _, idx := range idxs {
			delete(d.state.dirtyRules, idx)
			d.state.scrubbedRules[idx] = true
		}
		d.scrubSoon() // indices freed meanwhile
	}()
}

// putEndpoint writes an endpoint's config; the Datapath's putEndpointHook,
// set only by tests, can make it fail.
func (d *Datapath) putEndpoint(id uint32, cfg *moatEndpointConfig) error {
	if d.putEndpointHook != nil {
		if err := d.putEndpointHook(id, cfg); err != nil {
			return err
		}
	}
	return d.objs.MoatEndpoints.Put(&id, cfg)
}

// assignSlots returns the counter slot of every endpoint in want: the one
// its config holds, or a free one (with zeroed counters) for a new endpoint.
// Slots of endpoints that this Sync removes stay taken until it is done.
func (d *Datapath) assignSlots(want *MapState) (map[uint32]uint32, error) {
	s := &d.state
	alloc := newLowestFree(epSlots)
	for _, cfg := range s.endpoints {
		if cfg.Slot != 0 {
			alloc.used[cfg.Slot] = true
		}
	}
	slots := make(map[uint32]uint32, len(want.Endpoints))
	var fresh []uint32
	for id := range want.Endpoints {
		if cur, ok := s.endpoints[id]; ok && cur.Slot != 0 && cur.Slot <= epSlots {
			slots[id] = cur.Slot
			continue
		}
		slot, ok := alloc.take()
		if !ok {
			return nil, fmt.Errorf("allocate counter slot for ifindex %d: all %d in use", id, epSlots)
		}
		slots[id] = slot
		fresh = append(fresh, epStatsIndex(slot, uint32(policy.Ingress)), epStatsIndex(slot, uint32(policy.Egress)))
	}
	if err := zeroCounters[moatEpStats](d.objs.MoatEpStats, fresh); err != nil {
		return nil, err
	}
	return slots, nil
}

// bumpGeneration publishes a new maps generation (never 0 after the
// first): the programs then look at a tracked flow's endpoint config again
// before passing it, and re-check the flow when its revision changed.
func (d *Datapath) bumpGeneration() error {
	d.state.gen++
	if d.state.gen == 0 {
		d.state.gen = 1
	}
	zero := uint32(0)
	if err := d.objs.MoatGeneration.Put(&zero, &d.state.gen); err != nil {
		return fmt.Errorf("publish map generation: %w", err)
	}
	return nil
}

// rev returns a fresh revision number; revisions are never reused within a
// pinned map's life, so a stale CT entry never matches a new endpoint.
func (d *Datapath) rev() uint32 {
	r := d.state.nextRev
	d.state.nextRev++
	if d.state.nextRev == 0 {
		d.state.nextRev = 1
	}
	return r
}

// Rule returns what a rule index (from an event or counter) stands for.
func (d *Datapath) Rule(idx uint32) (RuleInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ri, ok := d.state.ruleInfo[idx]
	return ri, ok
}

// Entries returns the policy map entries as last synced (for inspection).
func (d *Datapath) Entries() map[PolicyKey]PolicyValue {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[PolicyKey]PolicyValue, len(d.state.policy))
	for k, v := range d.state.policy {
		out[k] = v
	}
	return out
}

// ipcacheBatch is a set of ipcache writes or deletions, split between the
// trie (prefixes) and the exact-match map (host addresses: /32 and /128,
// which the programs look up first; see ipcache_identity).
type ipcacheBatch struct {
	trieKeys     []moatIpcacheKey
	trieVals     []moatIpcacheVal
	triePrefixes []netip.Prefix
	hostKeys     []moatIpcacheHostKey
	hostVals     []moatIpcacheVal
	hostPrefixes []netip.Prefix
}

func (b *ipcacheBatch) add(p netip.Prefix, id policy.ID) {
	v := moatIpcacheVal{Identity: uint32(id)}
	if isHostPrefix(p) {
		b.hostKeys = append(b.hostKeys, moatIpcacheHostKey{Addr: p.Addr().As16()})
		b.hostVals = append(b.hostVals, v)
		b.hostPrefixes = append(b.hostPrefixes, p)
		return
	}
	b.trieKeys = append(b.trieKeys, ipcacheKey(p))
	b.trieVals = append(b.trieVals, v)
	b.triePrefixes = append(b.triePrefixes, p)
}

// put writes the batch (whose values are vals) and records in s what it
// wrote.
func (b *ipcacheBatch) put(o *moatObjects, s *syncState, want map[netip.Prefix]policy.ID) error {
	n, err := putMany(o.MoatIpcacheH, b.hostKeys, b.hostVals)
	for _, p := range b.hostPrefixes[:n] {
		s.ipcache[p] = want[p]
	}
	if err != nil {
		return err
	}
	n, err = putMany(o.MoatIpcache, b.trieKeys, b.trieVals)
	for _, p := range b.triePrefixes[:n] {
		s.ipcache[p] = want[p]
	}
	return err
}

// delete removes the batch's entries and forgets them in s.
func (b *ipcacheBatch) delete(o *moatObjects, s *syncState) error {
	n, err := deleteMany(o.MoatIpcacheH, b.hostKeys)
	for _, p := range b.hostPrefixes[:n] {
		delete(s.ipcache, p)
	}
	if err != nil {
		return err
	}
	n, err = deleteMany(o.MoatIpcache, b.trieKeys)
	for _, p := range b.triePrefixes[:n] {
		delete(s.ipcache, p)
	}
	return err
}

// policyBatch splits policy entries between the two maps that hold them:
// single-port and every-port entries go to the hash, range blocks to the
// trie (see struct policy_hkey in bpf/moat.h).
type policyBatch struct {
	hashKeys []moatPolicyHkey
	hashVals []moatPolicyVal
	hashed   []PolicyKey
	trieKeys []moatPolicyKey
	trieVals []moatPolicyVal
	tried    []PolicyKey
}

func (b *policyBatch) add(k PolicyKey, v PolicyValue) {
	if k.inHash() {
		b.hashKeys = append(b.hashKeys, k.hashKey())
		b.hashVals = append(b.hashVals, v.bpf())
		b.hashed = append(b.hashed, k)
		return
	}
	b.trieKeys = append(b.trieKeys, k.bpf())
	b.trieVals = append(b.trieVals, v.bpf())
	b.tried = append(b.tried, k)
}

// put writes the entries and calls done for each one written, also when
// it fails partway.
func (b *policyBatch) put(o *moatObjects, done func(PolicyKey)) error {
	n, err := putMany(o.MoatPolicyH, b.hashKeys, b.hashVals)
	for _, k := range b.hashed[:n] {
		done(k)
	}
	if err != nil {
		return err
	}
	n, err = putMany(o.MoatPolicy, b.trieKeys, b.trieVals)
	for _, k := range b.tried[:n] {
		done(k)
	}
	return err
}

// delete deletes the entries (values unused) and calls done for each one
// gone, also when it fails partway.
func (b *policyBatch) delete(o *moatObjects, done func(PolicyKey)) error {
	n, err := deleteMany(o.MoatPolicyH, b.hashKeys)
	for _, k := range b.hashed[:n] {
		done(k)
	}
	if err != nil {
		return err
	}
	n, err = deleteMany(o.MoatPolicy, b.trieKeys)
	for _, k := range b.tried[:n] {
		done(k)
	}
	return err
}
