package envoy

import (
	"fmt"
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// BenchPlan returns a Plan shaped like a busy node, for benchmarks of
// translation and xDS pushes: endpoints local endpoints (ten per identity),
// each with an ingress HTTP rule set on port 80 of rulesPerEndpoint rules
// (method, path, some with a header or host, each from one peer identity)
// and an egress HTTP rule set on ports 8080-8090 with a quarter as many
// rules, plus a CIDR identity that two rules in ten allow.
func BenchPlan(endpoints, rulesPerEndpoint int) *policy.Plan {
	const perIdentity = 10
	cidrID := policy.IDLocalFlag | 1
	plan := &policy.Plan{
		IPCache: []policy.IPCacheEntry{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Identity: cidrID}},
	}
	idOf := func(i int) policy.ID { return policy.IDFirstAllocated + policy.ID(i/perIdentity) }
	groups := (endpoints + perIdentity - 1) / perIdentity
	for i := range endpoints {
		n := uint32(i + 1)
		addr := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
		ep := policy.EndpointPlan{
			Name:      fmt.Sprintf("pod-%05d", i),
			Namespace: "bench",
			Identity:  idOf(i),
			Addresses: []netip.Addr{addr},
		}
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(addr, 32), Identity: ep.Identity})
		in := policy.HTTPRuleSet{Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 80, To: 80}}
		for k := range rulesPerEndpoint {
			peer := policy.IDFirstAllocated + policy.ID((i/perIdentity+k+1)%groups)
			if k%10 == 9 {
				peer = cidrID
			}
			r := &policy.HTTPRule{Method: "GET", Path: fmt.Sprintf("/api/v1/items/%d(/.*)?", k)}
			switch k % 4 {
			case 1:
				r.Method = "POST|PUT"
				r.Headers = []policy.HeaderMatch{{Name: "X-Bench-Token", Value: fmt.Sprint(k), HasValue: true}}
			case 2:
				r.Host = fmt.Sprintf("svc-%d\\.bench\\.svc(\\.cluster\\.local)?", k)
			}
			in.Rules = append(in.Rules, policy.HTTPAllow{
				Remotes: []policy.ID{peer},
				Rule:    r,
				From:    policy.RuleRef{Policy: "CiliumNetworkPolicy bench/p" + fmt.Sprint(k), Path: "spec.ingress[0]"},
			})
		}
		ep.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{in}}
		out := policy.HTTPRuleSet{Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 8080, To: 8090}}
		for k := range max(rulesPerEndpoint/4, 1) {
			out.Rules = append(out.Rules, policy.HTTPAllow{
				Remotes: []policy.ID{policy.IDFirstAllocated + policy.ID((i/perIdentity+k+2)%groups)},
				Rule:    &policy.HTTPRule{Method: "GET", Path: fmt.Sprintf("/v%d/.*", k)},
				From:    policy.RuleRef{Policy: "CiliumNetworkPolicy bench/e" + fmt.Sprint(k), Path: "spec.egress[0]"},
			})
		}
		ep.Egress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{out}}
		plan.Endpoints = append(plan.Endpoints, ep)
	}
	return plan
}
