package datapath

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/moatnet/moat/policy"
)

// BenchmarkPlanSync times planSync for a node of 500 endpoints (each with
// entries for 20 identities) and 100 CIDR prefixes, for a change that adds
// a prefix and moves 10 endpoint addresses to a new identity (so that
// transit identities are made).
func BenchmarkPlanSync(b *testing.B) {
	const endpoints, ids, prefixes = 500, 20, 100
	cur := &syncState{endpoints: map[uint32]moatEndpointConfig{}, policy: map[PolicyKey]PolicyValue{}, ipcache: map[netip.Prefix]policy.ID{}, local: map[netip.Addr]uint32{}}
	want := &MapState{Endpoints: map[uint32]EndpointState{}, Policy: map[PolicyKey]DesiredEntry{}, IPCache: map[netip.Prefix]policy.ID{}, Local: map[netip.Addr]uint32{}}
	for i := range endpoints {
		ep := uint32(100 + i)
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		id := policy.ID(256 + i%ids)
		cur.endpoints[ep] = moatEndpointConfig{Identity: uint32(id), Flags: epFlagEgressEnforced | epFlagEgressEntries}
		want.Endpoints[ep] = EndpointState{Identity: id, Flags: epFlagEgressEnforced | epFlagEgressEntries}
		p := netip.PrefixFrom(a, 32)
		cur.ipcache[p] = id
		want.IPCache[p] = id
		cur.local[a], want.Local[a] = ep, ep
		for r := range ids {
			k := PolicyKey{Endpoint: ep, Direction: policy.Egress, Identity: policy.ID(256 + r), Proto: policy.ProtoTCP, Ports: PortPrefix{Port: 80, Bits: 16}}
			v := PolicyValue{Verdict: policy.VerdictAllow, Rule: uint32(r + 1)}
			cur.policy[k] = v
			want.Policy[k] = DesiredEntry{Value: v}
		}
	}
	for i := range prefixes {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(i), 0, 0}), 16)
		cur.ipcache[p] = policy.IDLocalFlag | policy.ID(i+1)
		want.IPCache[p] = policy.IDLocalFlag | policy.ID(i+1)
	}
	// The change: ten endpoints get a new label identity.
	for i := range 10 {
		ep := uint32(100 + i)
		a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		want.IPCache[netip.PrefixFrom(a, 32)] = 999
		es := want.Endpoints[ep]
		es.Identity = 999
		want.Endpoints[ep] = es
	}
	for ep := range want.Endpoints {
		k := PolicyKey{Endpoint: ep, Direction: policy.Egress, Identity: 999, Proto: policy.ProtoTCP, Ports: PortPrefix{Port: 80, Bits: 16}}
		want.Policy[k] = DesiredEntry{Value: PolicyValue{Verdict: policy.VerdictAllow, Rule: 99}}
	}
	cur.policy = maps.Clone(cur.policy)
	var ops []syncOp
	for b.Loop() {
		ops = planSync(cur, want, nil)
	}
	b.ReportMetric(float64(len(ops)), "ops")
}
