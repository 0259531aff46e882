package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// compile_reference_test.go is a slow, direct evaluator of policies for one
// flow, written without the compiler's machinery (no selector cache, no
// range splitting), to check the compiled Plan against.

type refRemote struct {
	id     ID
	labels Labels
	prefix netip.Prefix // CIDR identity
	fqdn   string       // FQDN identity: "name|pattern"
}

func refRemotes(p *Plan) []refRemote {
	var out []refRemote
	for _, idn := range p.Identities {
		r := refRemote{id: idn.ID, labels: idn.Labels}
		for _, l := range idn.Labels {
			switch l.Source {
			case SourceCIDR:
				r.prefix = netip.MustParsePrefix(l.Key)
			case SourceFQDN:
				if l.Key == "matchName" {
					r.fqdn = l.Value + "|"
				} else {
					r.fqdn = "|" + l.Value
				}
			}
		}
		out = append(out, r)
	}
	return out
}

func refPeerMatches(p Peers, r refRemote) bool {
	if p.IsWildcard() {
		return true
	}
	labelSet := r.id >= IDFirstAllocated && !r.id.IsLocal()
	for _, s := range p.Endpoints {
		namesReserved := false
		for _, q := range s.Requirements {
			namesReserved = namesReserved || q.Source == SourceReserved
		}
		if (labelSet || (r.id < IDFirstAllocated && namesReserved)) && s.Matches(r.labels) {
			return true
		}
	}
	for _, e := range p.Entities {
		switch {
		case e == EntityAll,
			e == EntityWorld && (r.id == IDWorld || r.id.IsLocal()),
			e == EntityCluster && (labelSet || r.id == IDHost || r.id == IDRemoteNode || r.id == IDKubeAPIServer),
			e == EntityHost && r.id == IDHost,
			e == EntityRemoteNode && r.id == IDRemoteNode,
			e == EntityKubeAPIServer && r.id == IDKubeAPIServer:
			return true
		}
	}
	for _, c := range p.CIDRs {
		if r.id == IDWorld && c.Prefix.Bits() == 0 {
			return true
		}
		if !r.prefix.IsValid() || r.prefix.Addr().Is4() != c.Prefix.Addr().Is4() || r.prefix.Bits() < c.Prefix.Bits() || !c.Prefix.Contains(r.prefix.Addr()) {
			continue
		}
		excluded := false
		for _, ex := range c.Except {
			if ex.Addr().Is4() == r.prefix.Addr().Is4() && r.prefix.Bits() >= ex.Bits() && ex.Contains(r.prefix.Addr()) {
				excluded = true
			}
		}
		if !excluded {
			return true
		}
	}
	for _, f := range p.FQDNs {
		n := strings.TrimSuffix(strings.ToLower(f.MatchName), ".") + "|" + strings.TrimSuffix(strings.ToLower(f.MatchPattern), ".")
		if r.fqdn == n {
			return true
		}
	}
	return false
}

// refPortMatch reports whether a port rule covers (proto, port) and the
// verdict it gives there.
func refPortMatch(pr PortRule, proto Protocol, port uint16) bool {
	ports := pr.Ports
	if len(ports) == 0 {
		ports = []PortProtocol{{Proto: ProtoAny}}
	}
	for _, pp := range ports {
		inRange := pp.Ports.All() || (port >= pp.Ports.From && port <= max(pp.Ports.From, pp.Ports.To))
		if !inRange {
			continue
		}
		switch {
		case pp.Proto == proto:
			return true
		case pp.Proto != ProtoAny:
		case pr.HTTP != nil:
			if proto == ProtoTCP {
				return true
			}
		case pr.DNS != nil:
			if proto == ProtoTCP || proto == ProtoUDP {
				return true
			}
		case pp.Ports.All():
			return true
		case proto == ProtoTCP || proto == ProtoUDP || proto == ProtoSCTP:
			return true
		}
	}
	return false
}

type refOutcome struct {
	decision string // as planDecide()
	allowAll bool   // for a redirect: the remote may send any request
}

func refDecide(pols []Policy, opts Options, local Labels, d Direction, r refRemote, proto Protocol, port uint16) refOutcome {
	enforced := false
	best := VerdictNone
	var l7 L7Kind
	allowAll := false
	raise := func(v Verdict, k L7Kind) {
		if v > best || (v == best && k > l7) {
			best, l7 = v, k
		}
	}
	var hostRule bool
	for _, p := range pols {
		for _, rule := range p.Rules {
			if !rule.EndpointSelector.Matches(local) {
				continue
			}
			allow, deny := rule.Ingress, rule.IngressDeny
			if d == Egress {
				allow, deny = rule.Egress, rule.EgressDeny
			}
			if (d == Ingress && rule.DefaultDenyIngress) || (d == Egress && rule.DefaultDenyEgress) {
				enforced = true
			}
			for _, pr := range deny {
				if refPeerMatches(pr.Peers, r) && refL4(pr, proto, port) {
					raise(VerdictDeny, L7None)
				}
			}
			for _, pr := range allow {
				if !refPeerMatches(pr.Peers, r) {
					continue
				}
				if len(pr.Ports) == 0 && len(pr.ICMPs) == 0 {
					raise(VerdictAllow, L7None)
					allowAll = true
				}
				for _, port2 := range pr.Ports {
					if !refPortMatch(port2, proto, port) {
						continue
					}
					switch {
					case port2.HTTP != nil:
						raise(VerdictRedirect, L7HTTP)
						allowAll = allowAll || len(port2.HTTP) == 0
					case port2.DNS != nil:
						raise(VerdictRedirect, L7DNS)
						allowAll = allowAll || len(port2.DNS) == 0
					default:
						raise(VerdictAllow, L7None)
						allowAll = true
					}
				}
				if refICMP(pr.ICMPs, proto, port) {
					raise(VerdictAllow, L7None)
					allowAll = true
				}
			}
		}
	}
	if d == Ingress && enforced && opts.AllowHostIngress && r.id == IDHost {
		hostRule = true
		raise(VerdictAllow, L7None)
		allowAll = true
	}
	_ = hostRule
	out := refOutcome{allowAll: allowAll}
	switch {
	case best == VerdictDeny:
		out.decision = "deny"
	case best == VerdictRedirect:
		out.decision = "redirect-" + l7.String()
	case best == VerdictAllow:
		out.decision = "allow"
	case enforced:
		out.decision = "drop"
	default:
		out.decision = "allow"
	}
	return out
}

func refL4(pr PeerRule, proto Protocol, port uint16) bool {
	if len(pr.Ports) == 0 && len(pr.ICMPs) == 0 {
		return true
	}
	for _, p := range pr.Ports {
		q := p
		q.HTTP, q.DNS = nil, nil
		if refPortMatch(q, proto, port) {
			return true
		}
	}
	return refICMP(pr.ICMPs, proto, port)
}

func refICMP(icmps []ICMPField, proto Protocol, port uint16) bool {
	for _, ic := range icmps {
		want := ProtoICMP
		if ic.Family == "IPv6" {
			want = ProtoICMPv6
		}
		if proto == want && uint16(ic.Type) == port {
			return true
		}
	}
	return false
}

// planAllowAll reports whether the plan's L7 rule set at (proto, port)
// lets remote send any request.
func planAllowAll(dp *DirectionPlan, l7 string, remote ID, proto Protocol, port uint16) bool {
	if l7 == "redirect-http" {
		for _, rs := range dp.HTTP {
			if rs.Proto == proto && rs.Ports.Contains(port) {
				for _, r := range rs.Rules {
					if r.Rule == nil && traceRemoteIn(r.Remotes, remote) {
						return true
					}
				}
			}
		}
		return false
	}
	for _, rs := range dp.DNS {
		if rs.Proto == proto && rs.Ports.Contains(port) {
			for _, r := range rs.Rules {
				if r.Rule == nil && traceRemoteIn(r.Remotes, remote) {
					return true
				}
			}
		}
	}
	return false
}

var refProbes = []struct {
	proto Protocol
	port  uint16
}{
	{ProtoTCP, 80}, {ProtoTCP, 84}, {ProtoTCP, 85}, {ProtoTCP, 90}, {ProtoTCP, 91}, {ProtoTCP, 22},
	{ProtoUDP, 53}, {ProtoTCP, 53}, {ProtoSCTP, 53}, {ProtoUDP, 80}, {ProtoICMP, 8}, {ProtoICMP, 9},
}

// checkAgainstReference compares every local endpoint's decisions for every
// known remote identity and a set of probes with the direct evaluator.
func checkAgainstReference(t *testing.T, in Input, p *Plan) {
	t.Helper()
	labelsOf := map[ID]Labels{}
	for _, idn := range p.Identities {
		labelsOf[idn.ID] = idn.Labels
	}
	remotes := refRemotes(p)
	for i := range p.Endpoints {
		ep := &p.Endpoints[i]
		local := labelsOf[ep.Identity]
		for _, d := range []Direction{Ingress, Egress} {
			dp := ep.Direction(d)
			for _, r := range remotes {
				for _, pr := range refProbes {
					want := refDecide(in.Policies, in.Options, local, d, r, pr.proto, pr.port)
					got := planDecide(dp, r.id, pr.proto, pr.port)
					if got != want.decision {
						t.Fatalf("%s/%s %s remote %d %s/%d: plan says %s, reference %s", ep.Namespace, ep.Name, d, r.id, pr.proto, pr.port, got, want.decision)
					}
					if strings.HasPrefix(got, "redirect") {
						if all := planAllowAll(dp, got, r.id, pr.proto, pr.port); all != want.allowAll {
							t.Fatalf("%s/%s %s remote %d %s/%d: plan lets it send anything through the proxy: %v, reference %v", ep.Namespace, ep.Name, d, r.id, pr.proto, pr.port, all, want.allowAll)
						}
					}
				}
			}
		}
	}
}
