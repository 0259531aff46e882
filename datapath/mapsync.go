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
}

func (s *syncState) load(objs *moatObjects) error {
	s.endpoints = map[uint32]moatEndpointConfig{}
	s.names = map[uint32]EndpointKey{}
	s.policy = map[PolicyKey]PolicyValue{}
	s.ipcache = map[netip.Prefix]policy.ID{}
	s.rules = map[RuleKey]uint32{}
	s.ruleInfo = map[uint32]RuleInfo{}
	s.nextRule, s.nextRev = 1, 1

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
// the changed endpoints re-check the final policy once.
func (d *Datapath) Sync(plan *policy.Plan, ifaces map[EndpointKey]int, proxies ProxyPorts) error {
	want, err := DesiredState(plan, ifaces, proxies)
	if err != nil {
		return fmt.Errorf("sync datapath: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
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
	for p, id := range want.IPCache {
		if cur, ok := s.ipcache[p]; ok && cur == id {
			continue
		}
		k := ipcacheKey(p)
		if err := o.MoatIpcache.Put(&k, &moatIpcacheVal{Identity: uint32(id)}); err != nil {
			return fmt.Errorf("sync ipcache %s: %w", p, err)
		}
		s.ipcache[p] = id
	}
	for k, de := range want.Policy {
		if cur, ok := s.policy[k]; ok && cur == de.Value {
			continue
		}
		bk, bv := k.bpf(), de.Value.bpf()
		if err := o.MoatPolicy.Put(&bk, &bv); err != nil {
			return fmt.Errorf("sync policy %s: %w", k, err)
		}
		s.policy[k] = de.Value
		changed[dirKey{k.Endpoint, k.Direction}] = true
	}
	for k := range s.policy {
		if _, ok := want.Policy[k]; !ok {
			deleted[dirKey{k.Endpoint, k.Direction}] = true
		}
	}

	// 2. Endpoint config: flags, and new revisions where entries changed.
	for id, es := range want.Endpoints {
		cur, exists := s.endpoints[id]
		next := moatEndpointConfig{Identity: uint32(es.Identity), Flags: es.Flags, IngressRev: cur.IngressRev, EgressRev: cur.EgressRev}
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
	for k := range s.policy {
		if _, ok := want.Policy[k]; ok {
			continue
		}
		bk := k.bpf()
		if err := o.MoatPolicy.Delete(&bk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("sync: delete policy %s: %w", k, err)
		}
		delete(s.policy, k)
	}
	for p := range s.ipcache {
		if _, ok := want.IPCache[p]; ok {
			continue
		}
		k := ipcacheKey(p)
		if err := o.MoatIpcache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("sync: delete ipcache %s: %w", p, err)
		}
		delete(s.ipcache, p)
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
	for rk, idx := range s.rules {
		if liveRules[rk] == idx {
			continue
		}
		_ = o.MoatRuleStats.Delete(&idx)
		delete(s.ruleInfo, idx)
	}
	s.rules = liveRules
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
