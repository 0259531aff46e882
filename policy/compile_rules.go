package policy

// compile_rules.go turns one policy rule into what the per-identity
// computation consumes: the subject selection, and a list of contributions,
// each a set of peer selections with the L4 (and L7) specs they get.

// compiledRule is one rule of a loaded policy.
type compiledRule struct {
	pol         policyKey
	index       int // rule index within its policy
	subject     *selEntry
	defaultDeny [2]bool // by Direction
	contribs    []*contrib
}

func (r *compiledRule) less(o *compiledRule) bool {
	if r.pol != o.pol {
		return r.pol.less(o.pol)
	}
	return r.index < o.index
}

// contrib is one peer rule of one section.
type contrib struct {
	dir   Direction
	peers []*selEntry
	specs []portSpec
	ref   RuleRef
	hasL7 bool
}

// portSpec is one (proto, port range) a contribution covers, with its
// verdict. Ranges are inclusive; "every port" is 1..65535 for port-based
// protocols and the ICMP type itself for ICMP.
type portSpec struct {
	proto   Protocol
	from    uint16
	to      uint16
	verdict Verdict
	l7      L7Kind
	http    []HTTPRule // l7 == L7HTTP; non-nil
	dns     []DNSRule  // l7 == L7DNS; non-nil
}

func (s *portSpec) covers(proto Protocol, from, to uint16) bool {
	return (s.proto == ProtoAny || s.proto == proto) && s.from <= from && to <= s.to
}

// compilePolicyRules builds the rules of a policy, acquiring their
// selections from the cache.
func compilePolicyRules(p *Policy, cache *selCache) []*compiledRule {
	key := keyOfPolicy(p)
	ref := p.Ref()
	out := make([]*compiledRule, 0, len(p.Rules))
	for i := range p.Rules {
		r := &p.Rules[i]
		cr := &compiledRule{pol: key, index: i}
		cr.subject = cache.acquire(selProtoLabels(r.EndpointSelector))
		cr.subject.subjectOf[cr] = struct{}{}
		cr.defaultDeny[Ingress] = r.DefaultDenyIngress
		cr.defaultDeny[Egress] = r.DefaultDenyEgress
		sections := []struct {
			dir   Direction
			deny  bool
			peers []PeerRule
		}{
			{Ingress, false, r.Ingress},
			{Ingress, true, r.IngressDeny},
			{Egress, false, r.Egress},
			{Egress, true, r.EgressDeny},
		}
		for _, sec := range sections {
			for j := range sec.peers {
				pr := &sec.peers[j]
				c := &contrib{
					dir: sec.dir,
					ref: RuleRef{Policy: ref, Source: p.Source, Path: pr.Path},
				}
				for _, proto := range peerSelections(pr.Peers) {
					c.peers = append(c.peers, cache.acquire(proto))
				}
				c.specs = peerPortSpecs(pr, sec.deny)
				for _, s := range c.specs {
					if s.l7 != L7None {
						c.hasL7 = true
					}
				}
				cr.contribs = append(cr.contribs, c)
			}
		}
		out = append(out, cr)
	}
	return out
}

// releaseRules gives back the selections of rules.
func releaseRules(rules []*compiledRule, cache *selCache) {
	for _, cr := range rules {
		delete(cr.subject.subjectOf, cr)
		cache.release(cr.subject)
		for _, c := range cr.contribs {
			for _, e := range c.peers {
				cache.release(e)
			}
		}
	}
}

// peerSelections lists the selections of a Peers value (OR'ed).
func peerSelections(p Peers) []*selEntry {
	if p.IsWildcard() {
		return []*selEntry{selProtoAny()}
	}
	var out []*selEntry
	for _, s := range p.Endpoints {
		out = append(out, selProtoLabels(s))
	}
	for _, c := range p.CIDRs {
		out = append(out, selProtoCIDR(c))
	}
	for _, e := range p.Entities {
		out = append(out, selProtoEntity(e))
	}
	for _, f := range p.FQDNs {
		out = append(out, selProtoFQDN(f))
	}
	return out
}

// peerPortSpecs expands the L4 part of a peer rule.
func peerPortSpecs(pr *PeerRule, deny bool) []portSpec {
	verdict := VerdictAllow
	if deny {
		verdict = VerdictDeny
	}
	var out []portSpec
	if len(pr.Ports) == 0 && len(pr.ICMPs) == 0 {
		return []portSpec{{proto: ProtoAny, from: 1, to: 65535, verdict: verdict}}
	}
	for i := range pr.Ports {
		rule := &pr.Ports[i]
		l7 := L7None
		if !deny {
			switch {
			case rule.HTTP != nil:
				l7 = L7HTTP
			case rule.DNS != nil:
				l7 = L7DNS
			}
		}
		// Private copies: the Plan points at these rules.
		var httpRules []HTTPRule
		var dnsRules []DNSRule
		if l7 == L7HTTP {
			httpRules = append([]HTTPRule{}, rule.HTTP...)
		} else if l7 == L7DNS {
			dnsRules = append([]DNSRule{}, rule.DNS...)
		}
		ports := rule.Ports
		if len(ports) == 0 {
			ports = []PortProtocol{{Proto: ProtoAny}}
		}
		for _, pp := range ports {
			from, to := pp.Ports.From, pp.Ports.To
			if pp.Ports.All() {
				from, to = 1, 65535
			} else if to < from {
				to = from
			}
			if from == 0 {
				from = 1
			}
			for _, proto := range expandProto(pp.Proto, l7, pp.Ports.All()) {
				s := portSpec{proto: proto, from: from, to: to, verdict: verdict}
				if l7 != L7None {
					s.verdict = VerdictRedirect
					s.l7 = l7
					if l7 == L7HTTP {
						s.http = httpRules
					} else {
						s.dns = dnsRules
					}
				}
				out = append(out, s)
			}
		}
	}
	for _, ic := range pr.ICMPs {
		proto := ProtoICMP
		if ic.Family == "IPv6" {
			proto = ProtoICMPv6
		}
		out = append(out, portSpec{proto: proto, from: uint16(ic.Type), to: uint16(ic.Type), verdict: verdict})
	}
	return out
}

// expandProto lists the protocols a port entry stands for: ANY with a port
// means TCP, UDP and SCTP; HTTP runs on TCP only; DNS on UDP and TCP.
func expandProto(p Protocol, l7 L7Kind, allPorts bool) []Protocol {
	switch l7 {
	case L7HTTP:
		if p == ProtoAny {
			return []Protocol{ProtoTCP}
		}
	case L7DNS:
		if p == ProtoAny {
			return []Protocol{ProtoUDP, ProtoTCP}
		}
	default:
		if p == ProtoAny && !allPorts {
			return []Protocol{ProtoTCP, ProtoUDP, ProtoSCTP}
		}
	}
	return []Protocol{p}
}
