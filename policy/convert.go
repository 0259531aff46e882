package policy

import (
	"github.com/moatnet/moat/api/v1alpha1"
)

// convertCiliumLike converts a moat or Cilium policy (they share the rule
// type) into a Policy. namespaced policies live in metadata.namespace
// ("default" when unset) and have their selectors scoped to it.
func convertCiliumLike(errs *docErrors, base string, kind Kind, meta *v1alpha1.ObjectMeta, spec *v1alpha1.Rule, specs []v1alpha1.Rule, namespaced bool) *Policy {
	pol := &Policy{Kind: kind, Name: meta.Name}
	if meta.Name == "" {
		errs.add(joinPath(base, "metadata.name"), "required")
	}
	if namespaced {
		pol.Namespace = meta.Namespace
		if pol.Namespace == "" {
			pol.Namespace = "default"
		}
	}
	switch {
	case spec != nil && len(specs) > 0:
		errs.add(joinPath(base, "specs"), "spec and specs are mutually exclusive")
	case spec == nil && len(specs) == 0:
		errs.add(joinPath(base, "spec"), "one of spec or specs is required")
	case spec != nil:
		pol.Rules = append(pol.Rules, convertRule(errs, joinPath(base, "spec"), spec, pol.Namespace))
	default:
		for i := range specs {
			pol.Rules = append(pol.Rules, convertRule(errs, indexPath(joinPath(base, "specs"), i), &specs[i], pol.Namespace))
		}
	}
	return pol
}

// convertRule converts one rule. ns is the policy's namespace, "" for
// clusterwide policies.
//
// Default deny follows Cilium's documented behaviour: enableDefaultDeny
// "defaults to true for each traffic direction that has rules", and an
// ingress/egress list that is "omitted or empty" means the rule does not
// apply in that direction. So `ingress: []` does not put the endpoint into
// default deny, while `ingress: [{}]` (one rule that allows nothing) does.
// An explicit enableDefaultDeny.<dir>: false keeps the direction open
// (the rule only adds allows); an explicit true enables default deny even
// without rules in that direction.
func convertRule(errs *docErrors, path string, r *v1alpha1.Rule, ns string) Rule {
	out := Rule{Path: path, Description: r.Description}
	if r.EndpointSelector == nil {
		errs.add(joinPath(path, "endpointSelector"), "required ({} selects every endpoint)")
	} else {
		out.EndpointSelector = convertSelector(errs, joinPath(path, "endpointSelector"), r.EndpointSelector)
		if ns != "" {
			// A namespaced policy can only select its own namespace's
			// endpoints, whatever its selector says.
			out.EndpointSelector = out.EndpointSelector.With(namespaceRequirement(ns))
		}
	}
	for i := range r.Ingress {
		out.Ingress = append(out.Ingress, convertIngress(errs, indexPath(joinPath(path, "ingress"), i), &r.Ingress[i], ns, false))
	}
	for i := range r.IngressDeny {
		out.IngressDeny = append(out.IngressDeny, convertIngress(errs, indexPath(joinPath(path, "ingressDeny"), i), &r.IngressDeny[i], ns, true))
	}
	for i := range r.Egress {
		out.Egress = append(out.Egress, convertEgress(errs, indexPath(joinPath(path, "egress"), i), &r.Egress[i], ns, false))
	}
	for i := range r.EgressDeny {
		out.EgressDeny = append(out.EgressDeny, convertEgress(errs, indexPath(joinPath(path, "egressDeny"), i), &r.EgressDeny[i], ns, true))
	}
	out.DefaultDenyIngress = len(r.Ingress) > 0 || len(r.IngressDeny) > 0
	out.DefaultDenyEgress = len(r.Egress) > 0 || len(r.EgressDeny) > 0
	if d := r.EnableDefaultDeny; d != nil {
		if d.Ingress != nil {
			out.DefaultDenyIngress = *d.Ingress
		}
		if d.Egress != nil {
			out.DefaultDenyEgress = *d.Egress
		}
	}
	return out
}

func convertIngress(errs *docErrors, path string, r *v1alpha1.IngressRule, ns string, deny bool) PeerRule {
	out := PeerRule{Path: path}
	for i := range r.FromEndpoints {
		p := indexPath(joinPath(path, "fromEndpoints"), i)
		out.Peers.Endpoints = append(out.Peers.Endpoints, scopePeer(convertSelector(errs, p, &r.FromEndpoints[i]), ns))
	}
	out.Peers.CIDRs = convertCIDRs(errs, path, "fromCIDR", "fromCIDRSet", r.FromCIDR, r.FromCIDRSet)
	out.Peers.Entities = convertEntities(errs, joinPath(path, "fromEntities"), r.FromEntities)
	out.Ports, out.ICMPs = convertL4(errs, path, r.ToPorts, r.ICMPs, deny)
	return out
}

func convertEgress(errs *docErrors, path string, r *v1alpha1.EgressRule, ns string, deny bool) PeerRule {
	out := PeerRule{Path: path}
	for i := range r.ToEndpoints {
		p := indexPath(joinPath(path, "toEndpoints"), i)
		out.Peers.Endpoints = append(out.Peers.Endpoints, scopePeer(convertSelector(errs, p, &r.ToEndpoints[i]), ns))
	}
	out.Peers.CIDRs = convertCIDRs(errs, path, "toCIDR", "toCIDRSet", r.ToCIDR, r.ToCIDRSet)
	out.Peers.Entities = convertEntities(errs, joinPath(path, "toEntities"), r.ToEntities)
	if deny && len(r.ToFQDNs) > 0 {
		errs.add(joinPath(path, "toFQDNs"), "toFQDNs is not allowed in egressDeny")
	}
	for i, f := range r.ToFQDNs {
		p := indexPath(joinPath(path, "toFQDNs"), i)
		switch {
		case f.MatchName != "" && f.MatchPattern != "":
			errs.add(p, "set exactly one of matchName and matchPattern")
		case f.MatchName != "":
			checkDNSName(errs, joinPath(p, "matchName"), f.MatchName, false)
		case f.MatchPattern != "":
			checkDNSName(errs, joinPath(p, "matchPattern"), f.MatchPattern, true)
		default:
			errs.add(p, "set one of matchName and matchPattern")
		}
		out.Peers.FQDNs = append(out.Peers.FQDNs, FQDNSelector{MatchName: f.MatchName, MatchPattern: f.MatchPattern})
	}
	out.Ports, out.ICMPs = convertL4(errs, path, r.ToPorts, r.ICMPs, deny)
	return out
}

func convertCIDRs(errs *docErrors, path, cidrField, setField string, cidrs []string, sets []v1alpha1.CIDRRule) []CIDRRule {
	var out []CIDRRule
	for i, c := range cidrs {
		if p, ok := parseCIDR(errs, indexPath(joinPath(path, cidrField), i), c); ok {
			out = append(out, CIDRRule{Prefix: p})
		}
	}
	for i, s := range sets {
		if r, ok := convertCIDRRule(errs, indexPath(joinPath(path, setField), i), s.CIDR, s.Except); ok {
			out = append(out, r)
		}
	}
	return out
}

func convertEntities(errs *docErrors, path string, names []string) []Entity {
	var out []Entity
	for i, n := range names {
		if e, ok := parseEntity(errs, indexPath(path, i), n); ok {
			out = append(out, e)
		}
	}
	return out
}

// convertL4 converts toPorts and icmps of one peer rule.
func convertL4(errs *docErrors, path string, ports []v1alpha1.PortRule, icmps []v1alpha1.ICMPRule, deny bool) ([]PortRule, []ICMPField) {
	if len(ports) > 0 && len(icmps) > 0 {
		errs.add(joinPath(path, "icmps"), "icmps cannot be combined with toPorts in one rule; write two rules")
	}
	var out []PortRule
	for i := range ports {
		out = append(out, convertPortRule(errs, indexPath(joinPath(path, "toPorts"), i), &ports[i], deny))
	}
	var fields []ICMPField
	for i, ic := range icmps {
		ip := indexPath(joinPath(path, "icmps"), i)
		if len(ic.Fields) == 0 {
			errs.add(joinPath(ip, "fields"), "must not be empty")
		}
		for j, f := range ic.Fields {
			if v, ok := parseICMPField(errs, indexPath(joinPath(ip, "fields"), j), f.Type, f.Family); ok {
				fields = append(fields, v)
			}
		}
	}
	return out, fields
}

// convertPortRule converts one toPorts element with its L7 rules.
func convertPortRule(errs *docErrors, path string, pr *v1alpha1.PortRule, deny bool) PortRule {
	out := PortRule{Path: path}
	var httpRules, dnsRules bool
	if pr.Rules != nil {
		httpRules, dnsRules = len(pr.Rules.HTTP) > 0, len(pr.Rules.DNS) > 0
		rp := joinPath(path, "rules")
		switch {
		case deny && (httpRules || dnsRules):
			errs.add(rp, "L7 rules are not allowed in deny rules (ingressDeny/egressDeny are L3/L4 only)")
			httpRules, dnsRules = false, false
		case httpRules && dnsRules:
			errs.add(rp, "http and dns rules cannot be combined in one toPorts element")
		}
	}
	if len(pr.Ports) == 0 {
		if httpRules || dnsRules {
			errs.add(joinPath(path, "ports"), "L7 rules need at least one port")
		}
		out.Ports = []PortProtocol{{Proto: ProtoAny}}
	}
	for i, pp := range pr.Ports {
		p := indexPath(joinPath(path, "ports"), i)
		port, okPort := parsePortValue(errs, joinPath(p, "port"), string(pp.Port))
		proto, okProto := parseProtocol(errs, joinPath(p, "protocol"), pp.Protocol)
		if !okPort || !okProto {
			continue
		}
		rng, ok := portRange(errs, p, port, int64(pp.EndPort))
		if !ok {
			continue
		}
		if (httpRules || dnsRules) && port == 0 {
			errs.add(joinPath(p, "port"), "L7 rules need a specific port")
			continue
		}
		if httpRules && proto != ProtoTCP && proto != ProtoAny {
			errs.add(joinPath(p, "protocol"), "HTTP rules need protocol TCP or ANY, not %s", proto)
			continue
		}
		if dnsRules && proto == ProtoSCTP {
			errs.add(joinPath(p, "protocol"), "DNS rules need protocol UDP, TCP or ANY, not %s", proto)
			continue
		}
		out.Ports = append(out.Ports, PortProtocol{Ports: rng, Proto: proto})
	}
	if httpRules {
		out.HTTP = convertHTTPRules(errs, joinPath(path, "rules.http"), pr.Rules.HTTP)
	}
	if dnsRules {
		out.DNS = convertDNSRules(errs, joinPath(path, "rules.dns"), pr.Rules.DNS)
	}
	return out
}

func convertHTTPRules(errs *docErrors, path string, rules []v1alpha1.PortRuleHTTP) []HTTPRule {
	out := make([]HTTPRule, 0, len(rules))
	for i, h := range rules {
		p := indexPath(path, i)
		checkRegex(errs, joinPath(p, "method"), h.Method)
		checkRegex(errs, joinPath(p, "path"), h.Path)
		checkRegex(errs, joinPath(p, "host"), h.Host)
		r := HTTPRule{Path: h.Path, Method: h.Method, Host: h.Host, FieldPath: p}
		for j, s := range h.Headers {
			if hm, ok := parseHeader(errs, indexPath(joinPath(p, "headers"), j), s); ok {
				r.Headers = append(r.Headers, hm)
			}
		}
		for j, m := range h.HeaderMatches {
			mp := indexPath(joinPath(p, "headerMatches"), j)
			if !validHeaderName(m.Name) {
				errs.add(joinPath(mp, "name"), "invalid header name %q", m.Name)
				continue
			}
			r.Headers = append(r.Headers, HeaderMatch{Name: m.Name, Value: m.Value, HasValue: m.Value != ""})
		}
		out = append(out, r)
	}
	return out
}

func convertDNSRules(errs *docErrors, path string, rules []v1alpha1.PortRuleDNS) []DNSRule {
	out := make([]DNSRule, 0, len(rules))
	for i, d := range rules {
		p := indexPath(path, i)
		switch {
		case d.MatchName != "" && d.MatchPattern != "":
			errs.add(p, "set exactly one of matchName and matchPattern")
		case d.MatchName != "":
			checkDNSName(errs, joinPath(p, "matchName"), d.MatchName, false)
		case d.MatchPattern != "":
			checkDNSName(errs, joinPath(p, "matchPattern"), d.MatchPattern, true)
		default:
			errs.add(p, "set one of matchName and matchPattern")
		}
		out = append(out, DNSRule{MatchName: d.MatchName, MatchPattern: d.MatchPattern})
	}
	return out
}
