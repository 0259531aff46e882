package envoy

import (
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// Identities and addresses shared by the test plans.
const (
	idDeathstar  policy.ID = 300
	idEmpire     policy.ID = 301
	idAlliance   policy.ID = 302
	idApp1       policy.ID = 400
	idApp2       policy.ID = 401
	idApp3       policy.ID = 402
	idCIDR10     policy.ID = policy.IDLocalFlag | 1 // 10.0.0.0/8 from a toCIDR / fromCIDR
	idCIDRWorldy policy.ID = policy.IDLocalFlag | 2 // 203.0.113.0/24
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func port(p uint16) policy.PortRange { return policy.PortRange{From: p, To: p} }

func ref(pol, path string) policy.RuleRef {
	return policy.RuleRef{Policy: "CiliumNetworkPolicy default/" + pol, Path: path}
}

func ep(name string, id policy.ID, addrs ...string) policy.EndpointPlan {
	e := policy.EndpointPlan{Name: name, Namespace: "default", Identity: id}
	for _, a := range addrs {
		e.Addresses = append(e.Addresses, addr(a))
	}
	return e
}

// withIPCache fills the plan's ipcache with the endpoints' addresses plus
// extra entries, the way the compiler does.
func withIPCache(p *policy.Plan, extra ...policy.IPCacheEntry) *policy.Plan {
	for _, e := range p.Endpoints {
		for _, a := range e.Addresses {
			p.IPCache = append(p.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(a, a.BitLen()), Identity: e.Identity})
		}
	}
	p.IPCache = append(p.IPCache, extra...)
	return p
}

// remoteEndpoints are pods on other nodes: ipcache only.
func remote(a string, id policy.ID) policy.IPCacheEntry {
	return policy.IPCacheEntry{Prefix: netip.PrefixFrom(addr(a), 32), Identity: id}
}

type goldenCase struct {
	name string
	plan func() *policy.Plan
}

func goldenCases() []goldenCase {
	return []goldenCase{
		{"starwars-ingress", func() *policy.Plan {
			// org=empire may POST /v1/request-landing on deathstar:80.
			ds := ep("deathstar", idDeathstar, "10.0.0.10")
			ds.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
				Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{{
					Remotes: []policy.ID{idEmpire},
					Rule:    &policy.HTTPRule{Method: "POST", Path: "/v1/request-landing"},
					From:    ref("rule1", "specs[0].ingress[0]"),
				}},
			}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{ds, ep("tiefighter", idEmpire, "10.0.0.11"), ep("xwing", idAlliance, "10.0.0.12")}})
		}},
		{"http-example", func() *policy.Plan {
			// examples/policies/l7/http/http.yaml: app2 -> app1:80 GET /path1$, PUT /path2$ with X-My-Header: true.
			a1 := ep("app1", idApp1, "10.0.1.1", "fd00::1:1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
				Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{
					{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Method: "GET", Path: "/path1$", FieldPath: "spec.ingress[0].toPorts[0].rules.http[0]"}, From: ref("rule1", "spec.ingress[0]")},
					{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Method: "PUT", Path: "/path2$", Headers: []policy.HeaderMatch{{Name: "X-My-Header", Value: "true", HasValue: true}}}, From: ref("rule1", "spec.ingress[0]")},
				},
			}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}}, remote("10.0.2.2", idApp2), remote("10.0.2.3", idApp3))
		}},
		{"multi-peer", func() *policy.Plan {
			// Two peers share a rule, a third has its own, and a CIDR
			// identity (10.0.0.0/8) must not match the pods inside it.
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
				Proto: policy.ProtoTCP, Ports: port(8080),
				Rules: []policy.HTTPAllow{
					{Remotes: []policy.ID{idApp3, idApp2}, Rule: &policy.HTTPRule{Method: "GET", Path: "/shared/.*"}, From: ref("peers", "spec.ingress[0]")},
					{Remotes: []policy.ID{idCIDR10}, Rule: &policy.HTTPRule{Path: "/public"}, From: ref("peers", "spec.ingress[1]")},
				},
			}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}},
				remote("10.0.2.2", idApp2), remote("10.0.2.3", idApp3),
				policy.IPCacheEntry{Prefix: pfx("10.0.0.0/8"), Identity: idCIDR10})
		}},
		{"header-rules", func() *policy.Plan {
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
				Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{
					{Rule: &policy.HTTPRule{Headers: []policy.HeaderMatch{{Name: "X-Token", Value: "abc", HasValue: true}}}, From: ref("hdr", "spec.ingress[0]")},
					{Rule: &policy.HTTPRule{Headers: []policy.HeaderMatch{{Name: "X-Present"}, {Name: "X-Empty", HasValue: true}}}, From: ref("hdr", "spec.ingress[1]")},
				},
			}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}})
		}},
		{"host-rules", func() *policy.Plan {
			a1 := ep("client", idApp1, "10.0.1.1")
			a1.Egress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{
				Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{
					{Remotes: []policy.ID{idCIDRWorldy}, Rule: &policy.HTTPRule{Host: `api\.example\.com`, Method: "GET"}, From: ref("hosts", "spec.egress[0]")},
					{Remotes: []policy.ID{policy.IDWorld}, Rule: &policy.HTTPRule{Host: `.*\.cilium\.io|cilium\.io`}, From: ref("hosts", "spec.egress[1]")},
				},
			}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}},
				policy.IPCacheEntry{Prefix: pfx("203.0.113.0/24"), Identity: idCIDRWorldy})
		}},
		{"port-ranges", func() *policy.Plan {
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{
				{Proto: policy.ProtoTCP, Ports: port(80), Rules: []policy.HTTPAllow{{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Path: "/a"}, From: ref("ports", "spec.ingress[0]")}}},
				{Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 8000, To: 8080}, Rules: []policy.HTTPAllow{{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Path: "/b"}, From: ref("ports", "spec.ingress[1]")}}},
				{Proto: policy.ProtoAny, Ports: policy.PortRange{}, Rules: []policy.HTTPAllow{{Remotes: []policy.ID{idApp3}, Rule: &policy.HTTPRule{Method: "HEAD"}, From: ref("ports", "spec.ingress[2]")}}},
			}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}}, remote("10.0.2.2", idApp2), remote("10.0.2.3", idApp3))
		}},
		{"ingress-and-egress", func() *policy.Plan {
			// One endpoint with both directions redirected; two egress
			// endpoints share an identity and so a cluster.
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Method: "GET"}, From: ref("both", "spec.ingress[0]")}}}}}
			a1.Egress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{Proto: policy.ProtoTCP, Ports: port(9090),
				Rules: []policy.HTTPAllow{{Remotes: []policy.ID{idApp2}, Rule: &policy.HTTPRule{Method: "POST", Path: "/submit"}, From: ref("both", "spec.egress[0]")}}}}}
			a2 := ep("app1-b", idApp1, "10.0.1.2")
			a2.Egress = a1.Egress
			a3 := ep("app3", idApp3, "10.0.1.3")
			a3.Egress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{{Rule: &policy.HTTPRule{Method: "GET"}, From: ref("three", "spec.egress[0]")}}}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a3, a1, a2}}, remote("10.0.2.2", idApp2))
		}},
		{"allow-all-peer-overlap", func() *policy.Plan {
			// app2 has an L3 allow that overlaps the redirect (nil Rule):
			// it must not widen the GET /x rule of app3.
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{Proto: policy.ProtoTCP, Ports: port(80),
				Rules: []policy.HTTPAllow{
					{Remotes: []policy.ID{idApp2}, From: ref("l3", "spec.ingress[0]")},
					{Remotes: []policy.ID{idApp3}, Rule: &policy.HTTPRule{Method: "GET", Path: "/x"}, From: ref("l7", "spec.ingress[0]")},
				}}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1}}, remote("10.0.2.2", idApp2), remote("10.0.2.3", idApp3))
		}},
		{"empty-rule-set", func() *policy.Plan {
			// L7 on with no rules: every request on the port is denied.
			a1 := ep("app1", idApp1, "10.0.1.1")
			a1.Ingress = policy.DirectionPlan{Enforced: true, HTTP: []policy.HTTPRuleSet{{Proto: policy.ProtoTCP, Ports: port(80)}}}
			return withIPCache(&policy.Plan{Endpoints: []policy.EndpointPlan{a1, ep("idle", idApp2, "10.0.1.2")}})
		}},
	}
}
