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
	rules     map[RuleKey]uint32
	ruleInfo  map[uint32]RuleInfo
	nextRule  uint32
	nextRev   uint32
	gen       uint32 // moat_generation as last published
}

func (s *syncState) load(objs *moatObjects) error {
	s.endpoints = map[uint32]moatEndpointConfig{}
	s.names = map[uint32]EndpointKey{}
	s.policy = map[PolicyKey]PolicyValue{}
	s.ipcache = map[netip.Prefix]policy.ID{}
	s.rules = map[RuleKey]uint32{}
	s.ruleInfo = map[uint32]RuleInfo{}
	s.nextRule, s.nextRev = 1, 1
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
	var pk moatPolicyKey
	var pv moatPolicyVal
	pit := objs.MoatPolicy.Iterate()
	for pit.Next(&pk, &pv) {
		k, err := policyKeyFromBPF(pk)
		if err != nil {
			return err
		}
		v := policyValueFromBPF(pv)
		s.policy[k] = v
		if v.Rule != 0 {
			rk := ruleKeyOf(k)
			s.rules[rk] = v.Rule
			s.ruleInfo[v.Rule] = RuleInfo{RuleKey: rk}
			s.nextRule = max(s.nextRule, v.Rule+1)
		}
	}
	if err := pit.Err(); err != nil {
		return fmt.Errorf("read policy map: %w", err)
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
// host-side veth ifindex). The order keeps enforcement consistent while it
// runs: ipcache and policy additions and changes first, then endpoint
// flags, then deletions, then a revision bump that makes tracked flows of
// the changed endpoints re-check the final policy once, and last a new
// generation, which sends every tracked flow through that check.
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
	s := &d.state
	o := &d.objs

	// Rule indices: stable per (endpoint, direction, L4 key).
	liveRules := map[RuleKey]uint32{}
	for k, de := range want.Policy {
		idx, ok := liveRules[de.Rule]
		if !ok {
			if idx, ok = s.rules[de.Rule]; !ok {
				idx = s.nextRule
				s.nextRule++
				if s.nextRule == 0 {
					s.nextRule = 1
				}
			}
			liveRules[de.Rule] = idx
			s.ruleInfo[idx] = RuleInfo{Endpoint: want.Endpoints[de.Rule.Endpoint].Endpoint, RuleKey: de.Rule, Entry: de.Entry}
		}
		de.Value.Rule = idx
		want.Policy[k] = de
	}

	changed := map[dirKey]bool{}
	deleted := map[dirKey]bool{}

	// 1. Additions and changes.
	var ipKeys []moatIpcacheKey
	var ipVals []moatIpcacheVal
	var ipPrefixes []netip.Prefix
	for p, id := range want.IPCache {
		if cur, ok := s.ipcache[p]; ok && cur == id {
			continue
		}
		ipKeys = append(ipKeys, ipcacheKey(p))
		ipVals = append(ipVals, moatIpcacheVal{Identity: uint32(id)})
		ipPrefixes = append(ipPrefixes, p)
	}
	n, err := putMany(o.MoatIpcache, ipKeys, ipVals)
	for i := range n {
		s.ipcache[ipPrefixes[i]] = want.IPCache[ipPrefixes[i]]
	}
	if err != nil {
		return fmt.Errorf("sync ipcache: %w", err)
	}
	var polKeys []moatPolicyKey
	var polVals []moatPolicyVal
	var polChanged []PolicyKey
	shapes := map[uint32]uint32{}
	for k, de := range want.Policy {
		if f := k.shapeFlags(); shapes[k.Endpoint]&f == 0 {
			shapes[k.Endpoint] |= f
		}
		if cur, ok := s.policy[k]; ok && cur == de.Value {
			continue
		}
		polKeys = append(polKeys, k.bpf())
		polVals = append(polVals, de.Value.bpf())
		polChanged = append(polChanged, k)
		if dk := (dirKey{k.Endpoint, k.Direction}); !changed[dk] {
			changed[dk] = true
		}
	}
	n, err = putMany(o.MoatPolicy, polKeys, polVals)
	for _, k := range polChanged[:n] {
		s.policy[k] = want.Policy[k].Value
	}
	if err != nil {
		return fmt.Errorf("sync policy: %w", err)
	}
	var polGone []PolicyKey
	for k := range s.policy {
		if _, ok := want.Policy[k]; !ok {
			polGone = append(polGone, k)
			if dk := (dirKey{k.Endpoint, k.Direction}); !deleted[dk] {
				deleted[dk] = true
			}
		}
	}

	// 2. Endpoint config: flags, and new revisions where entries changed.
	for id, es := range want.Endpoints {
		cur, exists := s.endpoints[id]
		flags := es.Flags | shapes[id] | epFlagShapes
		next := moatEndpointConfig{Identity: uint32(es.Identity), Flags: flags, IngressRev: cur.IngressRev, EgressRev: cur.EgressRev}
		if !exists || s.names[id] != es.Endpoint {
			next.IngressRev, next.EgressRev = d.rev(), d.rev()
		}
		if changed[dirKey{id, policy.Ingress}] || next.Flags&^cur.Flags&epFlagIngressEnforced != 0 {
			next.IngressRev = d.rev()
		}
		if changed[dirKey{id, policy.Egress}] || next.Flags&^cur.Flags&epFlagEgressEnforced != 0 {
			next.EgressRev = d.rev()
		}
		if exists && cur == next {
			s.names[id] = es.Endpoint
			continue
		}
		if err := o.MoatEndpoints.Put(&id, &next); err != nil {
			return fmt.Errorf("sync endpoint %s (ifindex %d): %w", es.Endpoint, id, err)
		}
		s.endpoints[id] = next
		s.names[id] = es.Endpoint
	}

	// 3. Deletions.
	polKeys = polKeys[:0]
	for _, k := range polGone {
		polKeys = append(polKeys, k.bpf())
	}
	n, err = deleteMany(o.MoatPolicy, polKeys)
	for _, k := range polGone[:n] {
		delete(s.policy, k)
	}
	if err != nil {
		return fmt.Errorf("sync: delete policy: %w", err)
	}
	ipKeys, ipPrefixes = ipKeys[:0], ipPrefixes[:0]
	for p := range s.ipcache {
		if _, ok := want.IPCache[p]; !ok {
			ipKeys = append(ipKeys, ipcacheKey(p))
			ipPrefixes = append(ipPrefixes, p)
		}
	}
	n, err = deleteMany(o.MoatIpcache, ipKeys)
	for _, p := range ipPrefixes[:n] {
		delete(s.ipcache, p)
	}
	if err != nil {
		return fmt.Errorf("sync: delete ipcache: %w", err)
	}

	// 4. Revision bump after deletions, so re-checks see the final policy.
	for id := range want.Endpoints {
		in, eg := deleted[dirKey{id, policy.Ingress}], deleted[dirKey{id, policy.Egress}]
		if !in && !eg {
			continue
		}
		next := s.endpoints[id]
		if in {
			next.IngressRev = d.rev()
		}
		if eg {
			next.EgressRev = d.rev()
		}
		if err := o.MoatEndpoints.Put(&id, &next); err != nil {
			return fmt.Errorf("sync endpoint %s (ifindex %d): %w", want.Endpoints[id].Endpoint, id, err)
		}
		s.endpoints[id] = next
	}

	// 5. Endpoints gone, and counters of rules and endpoints gone.
	for id := range s.endpoints {
		if _, ok := want.Endpoints[id]; ok {
			continue
		}
		if err := o.MoatEndpoints.Delete(&id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("sync: delete endpoint ifindex %d: %w", id, err)
		}
		for _, dir := range []uint32{0, 1} {
			k := moatEpStatsKey{Endpoint: id, Direction: dir}
			_ = o.MoatEpStats.Delete(&k)
		}
		delete(s.endpoints, id)
		delete(s.names, id)
	}
	gone := map[uint32]bool{}
	for rk, idx := range s.rules {
		if liveRules[rk] == idx {
			continue
		}
		gone[idx] = true
		delete(s.ruleInfo, idx)
	}
	if len(gone) > 0 {
		// Only rules that saw traffic have counters: delete those (counters
		// only, so best effort).
		_, _ = deleteMany(o.MoatRuleStats, counterKeys(o.MoatRuleStats, gone))
	}
	s.rules = liveRules
	return nil
}

// counterKeys lists the keys of a counter map that are in want.
func counterKeys(m *ebpf.Map, want map[uint32]bool) []uint32 {
	var out []uint32
	var key, next uint32
	err := m.NextKey(nil, &next)
	for err == nil {
		if want[next] {
			out = append(out, next)
		}
		key = next
		err = m.NextKey(&key, &next)
	}
	return out
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
