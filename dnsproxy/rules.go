package dnsproxy

import (
	"errors"
	"fmt"

	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policy/fqdn"
)

// rules.go owns the DNS policy the proxy enforces: the Plan's DNS rule sets
// per endpoint compiled into matchers, and the toFQDNs selectors whose
// answers are learned. The decision is policy.Trace's (trace_l7.go,
// traceDNS) made fast: the first rule set whose protocol and ports cover
// the query's original destination decides; a query is allowed when some
// rule of that set lists the server's identity (or no identity) and has no
// DNS rule or one that matches the name. A rule whose name or pattern is
// invalid matches nothing, as in trace. dnsproxy's differential test checks
// the two against each other.

// Policy is what the proxy enforces; the agent builds it from each new Plan
// (PolicyFromPlan) and hands it over with Proxy.SetPolicy.
type Policy struct {
	// Endpoints holds the egress DNS rule sets of each local endpoint. An
	// endpoint that is missing, or has no set covering a query's
	// destination, gets every query refused (fail closed).
	Endpoints map[EndpointKey][]policy.DNSRuleSet
	// FQDNs are the toFQDNs selectors in force: answers for names they
	// select are learned, nothing else is.
	FQDNs []policy.FQDNSelection
}

// PolicyFromPlan extracts the proxy's Policy from a Plan.
func PolicyFromPlan(p *policy.Plan) Policy {
	pol := Policy{Endpoints: make(map[EndpointKey][]policy.DNSRuleSet, len(p.Endpoints)), FQDNs: p.FQDNs}
	for i := range p.Endpoints {
		ep := &p.Endpoints[i]
		if len(ep.Egress.DNS) > 0 {
			pol.Endpoints[EndpointKey{ep.Namespace, ep.Name}] = ep.Egress.DNS
		}
	}
	return pol
}

// compiledPolicy is a Policy ready for the hot path. Immutable.
type compiledPolicy struct {
	src       Policy
	endpoints map[EndpointKey][]compiledSet
	selectors []compiledSelector
	// anySelector matches what any selector matches: the fast "no" of
	// selectorsFor.
	anySelector *fqdn.Matcher
}

type compiledSet struct {
	proto policy.Protocol
	ports policy.PortRange
	// any holds the rules without a remote list; byRemote those that list
	// identities, merged per identity.
	any      ruleGroup
	byRemote map[policy.ID]*ruleGroup
}

// ruleGroup is the union of some rules: all is set by a rule without a DNS
// part (every query), names and patterns collect the others.
type ruleGroup struct {
	all      bool
	names    []string
	patterns []string
	m        *fqdn.Matcher
}

func (g *ruleGroup) add(r *policy.DNSRule) {
	if r == nil {
		g.all = true
		return
	}
	if r.MatchName != "" {
		g.names = append(g.names, r.MatchName)
	}
	if r.MatchPattern != "" {
		g.patterns = append(g.patterns, r.MatchPattern)
	}
}

func (g *ruleGroup) compile() error {
	m, err := fqdn.NewMatcher(g.names, g.patterns)
	if err != nil {
		return err
	}
	g.m, g.names, g.patterns = m, nil, nil
	return nil
}

func (g *ruleGroup) allows(qname string) bool {
	return g != nil && (g.all || g.m.Match(qname))
}

type compiledSelector struct {
	sel policy.FQDNSelection
	m   *fqdn.Matcher
}

// ruleValid reports whether trace would be able to match with r at all
// (its matchName and matchPattern both valid, when set).
func ruleValid(r *policy.DNSRule) error {
	if r == nil {
		return nil
	}
	if r.MatchName != "" {
		if err := fqdn.ValidateName(r.MatchName); err != nil {
			return fmt.Errorf("matchName %q: %w", r.MatchName, err)
		}
	}
	if r.MatchPattern != "" {
		if err := fqdn.ValidatePattern(r.MatchPattern); err != nil {
			return fmt.Errorf("matchPattern %q: %w", r.MatchPattern, err)
		}
	}
	return nil
}

// compilePolicy compiles pol. Invalid rules and selectors are skipped (they
// match nothing, as in trace) and reported in the error; the result is
// usable either way.
func compilePolicy(pol Policy) (*compiledPolicy, error) {
	var errs []error
	cp := &compiledPolicy{src: pol, endpoints: make(map[EndpointKey][]compiledSet, len(pol.Endpoints))}
	for key, sets := range pol.Endpoints {
		out := make([]compiledSet, 0, len(sets))
		for si := range sets {
			s := &sets[si]
			cs := compiledSet{proto: s.Proto, ports: s.Ports, byRemote: map[policy.ID]*ruleGroup{}}
			for ri := range s.Rules {
				r := &s.Rules[ri]
				if err := ruleValid(r.Rule); err != nil {
					errs = append(errs, fmt.Errorf("endpoint %s: dns rule set %d rule %d (%s): skipped: %w", key, si, ri, r.From, err))
					continue
				}
				if len(r.Remotes) == 0 {
					cs.any.add(r.Rule)
					continue
				}
				for _, id := range r.Remotes {
					g := cs.byRemote[id]
					if g == nil {
						g = &ruleGroup{}
						cs.byRemote[id] = g
					}
					g.add(r.Rule)
				}
			}
			// Validated above, so compiling cannot fail; keep the error
			// path anyway rather than trusting it silently.
			if err := cs.any.compile(); err != nil {
				return nil, fmt.Errorf("endpoint %s: compile dns rule set %d: %w", key, si, err)
			}
			for id, g := range cs.byRemote {
				if err := g.compile(); err != nil {
					return nil, fmt.Errorf("endpoint %s: compile dns rule set %d for identity %d: %w", key, si, id, err)
				}
			}
			out = append(out, cs)
		}
		cp.endpoints[key] = out
	}
	var allNames, allPatterns []string
	for i, s := range pol.FQDNs {
		var names, patterns []string
		if s.Selector.MatchName != "" {
			names = []string{s.Selector.MatchName}
		}
		if s.Selector.MatchPattern != "" {
			patterns = []string{s.Selector.MatchPattern}
		}
		m, err := fqdn.NewMatcher(names, patterns)
		if err != nil {
			errs = append(errs, fmt.Errorf("toFQDNs selector %d: skipped: %w", i, err))
			continue
		}
		cp.selectors = append(cp.selectors, compiledSelector{sel: s, m: m})
		allNames = append(allNames, names...)
		allPatterns = append(allPatterns, patterns...)
	}
	anySel, err := fqdn.NewMatcher(allNames, allPatterns)
	if err != nil {
		return nil, fmt.Errorf("compile toFQDNs selectors: %w", err)
	}
	cp.anySelector = anySel
	return cp, errors.Join(errs...)
}

// decision is the outcome of judging one query.
type decision uint8

const (
	decisionAllow decision = iota
	// decisionDeny: a rule set covers the destination and no rule allows.
	decisionDeny
	// decisionNoRuleSet: nothing covers the destination (fail closed).
	decisionNoRuleSet
)

// decide judges qname (presentation form) sent by ep to a server of
// identity remote on proto/port.
func (cp *compiledPolicy) decide(ep EndpointKey, proto policy.Protocol, port uint16, remote policy.ID, qname string) decision {
	sets := cp.endpoints[ep]
	for i := range sets {
		s := &sets[i]
		if s.proto != proto || !s.ports.Contains(port) {
			continue
		}
		if s.any.allows(qname) || s.byRemote[remote].allows(qname) {
			return decisionAllow
		}
		return decisionDeny
	}
	return decisionNoRuleSet
}

// selectorsFor returns the toFQDNs selections that select name.
func (cp *compiledPolicy) selectorsFor(name string) []policy.FQDNSelection {
	if !cp.anySelector.Match(name) {
		return nil
	}
	var out []policy.FQDNSelection
	for i := range cp.selectors {
		if cp.selectors[i].m.Match(name) {
			out = append(out, cp.selectors[i].sel)
		}
	}
	return out
}
