package policy

import (
	"net/netip"
	"sort"
	"strings"
	"testing"
)

// Test builders for policies as Go values.

// tsel builds a selector from "key=value" terms (k8s source unless the key
// carries one), scoped to ns when ns != "".
func tsel(ns string, terms ...string) Selector {
	var s Selector
	for _, t := range terms {
		k, v, _ := strings.Cut(t, "=")
		src, key := ParseLabelKey(k)
		if src == "" {
			src = SourceK8s
		}
		s.Requirements = append(s.Requirements, Requirement{Source: src, Key: key, Operator: OpIn, Values: []string{v}})
	}
	if ns != "" {
		s.Requirements = append(s.Requirements, Requirement{Source: SourceK8s, Key: LabelNamespace, Operator: OpIn, Values: []string{ns}})
	}
	return s.Normalized()
}

func tports(proto Protocol, ports ...uint16) []PortRule {
	var pr PortRule
	for _, p := range ports {
		pr.Ports = append(pr.Ports, PortProtocol{Proto: proto, Ports: PortRange{From: p, To: p}})
	}
	return []PortRule{pr}
}

func tpol(ns, name string, rules ...Rule) Policy {
	kind := KindCiliumNetworkPolicy
	if ns == "" {
		kind = KindCiliumClusterwideNetworkPolicy
	}
	for i := range rules {
		if rules[i].Path == "" {
			rules[i].Path = "spec"
		}
		fix := func(prs []PeerRule, sec string) {
			for j := range prs {
				if prs[j].Path == "" {
					prs[j].Path = "spec." + sec + "[" + itoa(j) + "]"
				}
			}
		}
		fix(rules[i].Ingress, "ingress")
		fix(rules[i].IngressDeny, "ingressDeny")
		fix(rules[i].Egress, "egress")
		fix(rules[i].EgressDeny, "egressDeny")
		if len(rules[i].Ingress)+len(rules[i].IngressDeny) > 0 {
			rules[i].DefaultDenyIngress = true
		}
		if len(rules[i].Egress)+len(rules[i].EgressDeny) > 0 {
			rules[i].DefaultDenyEgress = true
		}
	}
	return Policy{Kind: kind, Namespace: ns, Name: name, Source: Source{File: name + ".yaml", Doc: 1}, Rules: rules}
}

func tep(ns, name, ip string, labels ...string) Endpoint {
	ep := Endpoint{Name: name, Namespace: ns, Labels: map[string]string{}}
	if ip != "" {
		ep.IPv4 = netip.MustParseAddr(ip)
	}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		ep.Labels[k] = v
	}
	return ep
}

// lookup applies the Entry contract of plan.go: the highest verdict among
// covering entries.
func planLookup(dp *DirectionPlan, id ID, proto Protocol, port uint16) (Verdict, L7Kind) {
	var best Verdict
	var l7 L7Kind
	for _, e := range dp.Entries {
		if (e.Identity == IDAny || e.Identity == id) && (e.Proto == ProtoAny || e.Proto == proto) && e.Ports.Contains(port) {
			if e.Verdict > best {
				best, l7 = e.Verdict, e.L7
			}
		}
	}
	return best, l7
}

// decide is the final decision of one direction: allowed or not, and the
// proxy it goes through.
func planDecide(dp *DirectionPlan, id ID, proto Protocol, port uint16) string {
	v, l7 := planLookup(dp, id, proto, port)
	switch {
	case v == VerdictDeny:
		return "deny"
	case v == VerdictRedirect:
		return "redirect-" + l7.String()
	case v == VerdictAllow:
		return "allow"
	case dp.Enforced:
		return "drop"
	}
	return "allow"
}

// checkContract verifies the Entry shape guarantees of plan.go.
func checkContract(t *testing.T, p *Plan) {
	t.Helper()
	for _, ep := range p.Endpoints {
		for _, d := range []Direction{Ingress, Egress} {
			dp := ep.Direction(d)
			seen := map[L4Key]bool{}
			for i, e := range dp.Entries {
				if seen[e.L4Key] {
					t.Errorf("%s/%s %s: duplicate key %+v", ep.Namespace, ep.Name, d, e.L4Key)
				}
				seen[e.L4Key] = true
				if e.Proto == ProtoAny && !e.Ports.All() {
					t.Errorf("%s/%s %s: ProtoAny entry with ports %v", ep.Namespace, ep.Name, d, e.Ports)
				}
				if (e.Verdict == VerdictRedirect) != (e.L7 != L7None) {
					t.Errorf("%s/%s %s: verdict %v with l7 %q", ep.Namespace, ep.Name, d, e.Verdict, e.L7)
				}
				if !sort.SliceIsSorted(e.DerivedFrom, func(a, b int) bool { return compareRuleRefs(e.DerivedFrom[a], e.DerivedFrom[b]) < 0 }) {
					t.Errorf("%s/%s %s: DerivedFrom not sorted", ep.Namespace, ep.Name, d)
				}
				if i > 0 {
					prev := dp.Entries[i-1]
					if prev.Identity > e.Identity || (prev.Identity == e.Identity && (prev.Proto > e.Proto || (prev.Proto == e.Proto && prev.Ports.From >= e.Ports.From))) {
						t.Errorf("%s/%s %s: entries out of order at %d", ep.Namespace, ep.Name, d, i)
					}
					if prev.Identity == e.Identity && prev.Proto == e.Proto && (prev.Ports.All() || e.Ports.All() || prev.Ports.To >= e.Ports.From) {
						t.Errorf("%s/%s %s: overlapping ranges %v %v", ep.Namespace, ep.Name, d, prev.Ports, e.Ports)
					}
				}
			}
		}
	}
}
