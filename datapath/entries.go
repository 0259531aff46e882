package datapath

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/moatnet/moat/policy"
)

// EndpointKey names a local endpoint as the Plan does.
type EndpointKey struct {
	Namespace string
	Name      string
}

func (k EndpointKey) String() string { return k.Namespace + "/" + k.Name }

// ProxyKey selects a proxy listener: the direction it serves and its kind.
type ProxyKey struct {
	Direction policy.Direction
	L7        policy.L7Kind
}

// ProxyPorts maps each proxy to the port its transparent listener accepts
// on. Only listeners the proxy has acknowledged belong here: a redirect
// whose proxy is missing is written with port 0 and drops (fail closed).
type ProxyPorts map[ProxyKey]uint16

// RuleKey identifies the Plan entry that a policy map entry came from; every
// port block of one entry shares its rule index and counters.
type RuleKey struct {
	Endpoint  uint32
	Direction policy.Direction
	policy.L4Key
}

// RuleInfo describes a rule index for counter attribution.
type RuleInfo struct {
	Endpoint EndpointKey
	RuleKey
	Entry policy.Entry // zero but for L4Key after an adoption, until the next Sync
}

// EndpointState is the endpoint config map value.
type EndpointState struct {
	Endpoint EndpointKey
	Identity policy.ID
	Flags    uint32
}

// DesiredEntry is a policy map entry before its rule index is allocated.
type DesiredEntry struct {
	Value PolicyValue // Rule is 0
	Rule  RuleKey
	Entry policy.Entry
}

// MapState is the desired content of the endpoint, policy and ipcache maps,
// and of moat_local_ep (a local endpoint's address -> its ifindex).
type MapState struct {
	Endpoints map[uint32]EndpointState
	Policy    map[PolicyKey]DesiredEntry
	IPCache   map[netip.Prefix]policy.ID
	Local     map[netip.Addr]uint32
}

// DesiredState computes the map content for plan: the endpoints that have an
// interface in ifaces, their entries split into port blocks, and the ipcache
// (the plan's plus each endpoint's own addresses). It is pure.
func DesiredState(plan *policy.Plan, ifaces map[EndpointKey]int, proxies ProxyPorts) (*MapState, error) {
	st := &MapState{
		Endpoints: map[uint32]EndpointState{},
		Policy:    map[PolicyKey]DesiredEntry{},
		IPCache:   map[netip.Prefix]policy.ID{},
		Local:     map[netip.Addr]uint32{},
	}
	for _, e := range plan.IPCache {
		if !e.Prefix.IsValid() {
			return nil, fmt.Errorf("compute ipcache: invalid prefix for identity %s", e.Identity)
		}
		st.IPCache[e.Prefix.Masked()] = e.Identity
	}
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		key := EndpointKey{Namespace: ep.Namespace, Name: ep.Name}
		ifindex, ok := ifaces[key]
		if !ok {
			continue
		}
		if ifindex <= 0 {
			return nil, fmt.Errorf("compute endpoint %s: invalid ifindex %d", key, ifindex)
		}
		id := uint32(ifindex)
		if prev, dup := st.Endpoints[id]; dup {
			return nil, fmt.Errorf("compute endpoint %s: ifindex %d already used by %s", key, ifindex, prev.Endpoint)
		}
		es := EndpointState{Endpoint: key, Identity: ep.Identity}
		for _, a := range ep.Addresses {
			p := netip.PrefixFrom(a, a.BitLen())
			if _, ok := st.IPCache[p]; !ok {
				st.IPCache[p] = ep.Identity
			}
			if prev, dup := st.Local[a.Unmap()]; dup {
				return nil, fmt.Errorf("compute endpoint %s: address %s already used by the endpoint on ifindex %d", key, a, prev)
			}
			st.Local[a.Unmap()] = id
		}
		for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
			dp := ep.Direction(dir)
			if dp.Enforced {
				es.Flags |= flagFor(dir, epFlagIngressEnforced, epFlagEgressEnforced)
			}
			if len(dp.Entries) > 0 {
				es.Flags |= flagFor(dir, epFlagIngressEntries, epFlagEgressEntries)
			}
			for _, e := range dp.Entries {
				if err := addEntry(st, id, dir, e, proxies); err != nil {
					return nil, fmt.Errorf("compute endpoint %s %s: %w", key, dir, err)
				}
			}
		}
		st.Endpoints[id] = es
	}
	if err := checkDisjoint(plan, ifaces); err != nil {
		return nil, err
	}
	return st, nil
}

// checkDisjoint enforces the Plan's contract that the port ranges of one
// (identity, proto) pair are disjoint: otherwise the longest-prefix match
// would pick one entry where the contract asks for the highest verdict.
func checkDisjoint(plan *policy.Plan, ifaces map[EndpointKey]int) error {
	type group struct {
		dir   policy.Direction
		id    policy.ID
		proto policy.Protocol
	}
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		if _, ok := ifaces[EndpointKey{Namespace: ep.Namespace, Name: ep.Name}]; !ok {
			continue
		}
		seen := map[group][]policy.L4Key{}
		for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
			for _, e := range ep.Direction(dir).Entries {
				if e.Proto == policy.ProtoAny {
					continue // one block; duplicates are caught as equal keys
				}
				g := group{dir, e.Identity, e.Proto}
				for _, k := range seen[g] {
					if overlaps(k, e.L4Key) {
						return fmt.Errorf("compute endpoint %s/%s %s: entries %s/%s/%s and %s overlap (the plan breaks the entry contract)",
							ep.Namespace, ep.Name, dir, e.Identity, e.Proto, k.PortsString(), e.PortsString())
					}
				}
				seen[g] = append(seen[g], e.L4Key)
			}
		}
	}
	return nil
}

// overlaps reports whether the ranges of two keys of one protocol share a port.
func overlaps(a, b policy.L4Key) bool {
	if a.AllPorts() || b.AllPorts() {
		return true
	}
	return a.Ports.From <= b.Ports.To && b.Ports.From <= a.Ports.To
}

func idString(id policy.ID) string {
	if id == policy.IDAny {
		return "any"
	}
	return id.String()
}

func flagFor(dir policy.Direction, ingress, egress uint32) uint32 {
	if dir == policy.Egress {
		return egress
	}
	return ingress
}

func addEntry(st *MapState, ep uint32, dir policy.Direction, e policy.Entry, proxies ProxyPorts) error {
	if e.Verdict == policy.VerdictNone || e.Verdict > policy.VerdictDeny {
		return fmt.Errorf("entry %s/%s/%s: invalid verdict %d", e.Identity, e.Proto, e.PortsString(), e.Verdict)
	}
	val := PolicyValue{Verdict: e.Verdict}
	if e.Verdict == policy.VerdictRedirect {
		val.L7 = e.L7
		val.ProxyPort = proxies[ProxyKey{Direction: dir, L7: e.L7}]
	}
	ranges := PortBlocks(e.L4Key)
	if len(ranges) == 0 {
		return fmt.Errorf("entry %s/%s: empty port range %d-%d", e.Identity, e.Proto, e.Ports.From, e.Ports.To)
	}
	rk := RuleKey{Endpoint: ep, Direction: dir, L4Key: e.L4Key}
	for _, pp := range ranges {
		k := PolicyKey{Endpoint: ep, Direction: dir, Identity: e.Identity, Proto: e.Proto, Ports: pp}
		if prev, dup := st.Policy[k]; dup {
			return fmt.Errorf("entries %s/%s/%s and %s/%s/%s overlap at port block %s (the plan breaks the entry contract)",
				prev.Rule.Identity, prev.Rule.Proto, prev.Rule.Ports, e.Identity, e.Proto, e.Ports, pp)
		}
		st.Policy[k] = DesiredEntry{Value: val, Rule: rk, Entry: e}
	}
	return nil
}

// Format renders the state one entry per line, sorted: the golden format.
func (st *MapState) Format() string {
	var lines []string
	for id, es := range st.Endpoints {
		lines = append(lines, fmt.Sprintf("endpoint ifindex=%d %s identity=%s flags=%s", id, es.Endpoint, es.Identity, flagsString(es.Flags)))
	}
	for k, v := range st.Policy {
		lines = append(lines, fmt.Sprintf("policy %s -> %s l7=%s proxy=%d rule=%s/%s/%s",
			k, v.Value.Verdict, v.Value.L7, v.Value.ProxyPort, idString(v.Rule.Identity), v.Rule.Proto, v.Rule.PortsString()))
	}
	for p, id := range st.IPCache {
		lines = append(lines, fmt.Sprintf("ipcache %s -> %s", p, id))
	}
	for a, id := range st.Local {
		lines = append(lines, fmt.Sprintf("local %s -> ifindex=%d", a, id))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func flagsString(f uint32) string {
	var parts []string
	for _, n := range []struct {
		bit  uint32
		name string
	}{
		{epFlagIngressEnforced, "ingress-enforced"},
		{epFlagEgressEnforced, "egress-enforced"},
		{epFlagIngressEntries, "ingress-entries"},
		{epFlagEgressEntries, "egress-entries"},
	} {
		if f&n.bit != 0 {
			parts = append(parts, n.name)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}
