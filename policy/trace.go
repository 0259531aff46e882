package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// trace.go answers "would this packet or request be allowed?" from a Plan
// alone, with exactly the lookup semantics of plan.go that the datapath and
// the proxies implement.

// TracePeer names one end of a traced flow: a local endpoint by namespace
// and name, or an address.
type TracePeer struct {
	Namespace string     `json:"namespace,omitempty"`
	Name      string     `json:"name,omitempty"`
	IP        netip.Addr `json:"ip,omitzero"`
}

// String renders "ns/name" or the address.
func (p TracePeer) String() string {
	if p.Name != "" {
		return p.Namespace + "/" + p.Name
	}
	return p.IP.String()
}

// TraceHTTP is the HTTP request of a traced flow. Path is the raw request
// target as the client sends it (it may carry a query string).
type TraceHTTP struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Host    string            `json:"host,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// PathMode is the proxy's path mode: "strict" (the default, also
	// when empty) or "envoy" (see internal/httpnorm).
	PathMode string `json:"pathMode,omitempty"`
}

// TraceRequest describes the flow to trace. Port is the destination port,
// or the ICMP type for ICMP.
type TraceRequest struct {
	From     TracePeer  `json:"from"`
	To       TracePeer  `json:"to"`
	Proto    Protocol   `json:"proto"`
	Port     uint16     `json:"port"`
	HTTP     *TraceHTTP `json:"http,omitempty"`
	DNSQuery string     `json:"dnsQuery,omitempty"`
}

// Trace verdicts.
const (
	TraceAllowed = "ALLOWED"
	TraceDenied  = "DENIED"
)

// TraceResult is the answer of Trace.
type TraceResult struct {
	Verdict     string      `json:"verdict"` // TraceAllowed or TraceDenied
	Source      TraceEnd    `json:"source"`
	Destination TraceEnd    `json:"destination"`
	Steps       []TraceStep `json:"steps"`
	Error       string      `json:"error,omitempty"`
}

// Allowed reports whether the flow is allowed.
func (r *TraceResult) Allowed() bool { return r.Verdict == TraceAllowed }

// TraceEnd is one resolved end of the flow.
type TraceEnd struct {
	Peer     TracePeer `json:"peer"`
	Identity ID        `json:"identity"`
	Local    bool      `json:"local"` // a local endpoint whose policy applies
	// Via says how the identity was found ("endpoint", "ipcache 10.0.0.0/8").
	Via string `json:"via"`
}

// TraceStep is the decision of one direction of one local endpoint.
type TraceStep struct {
	Direction string `json:"direction"` // "ingress" or "egress"
	Endpoint  string `json:"endpoint"`  // ns/name
	Remote    ID     `json:"remote"`
	Enforced  bool   `json:"enforced"`
	// Entries are the entries covering the packet; Decisive is the one
	// that decided (nil when none covered it).
	Entries  []Entry `json:"entries,omitempty"`
	Decisive *Entry  `json:"decisive,omitempty"`
	Allowed  bool    `json:"allowed"`
	// Proxy is "http" or "dns" when the packet is redirected.
	Proxy  string       `json:"proxy,omitempty"`
	HTTP   *TraceL7HTTP `json:"http,omitempty"`
	DNS    *TraceL7DNS  `json:"dns,omitempty"`
	Reason string       `json:"reason"`
}

// TraceL7HTTP is the HTTP proxy's decision.
type TraceL7HTTP struct {
	// Action is the path normalisation's action: Forward, Redirect or
	// Reject. On Redirect the client is sent to NormalizedPath and the
	// decision below is the one its follow-up request gets.
	Action         string     `json:"action"`
	NormalizedPath string     `json:"normalizedPath,omitempty"`
	Status         int        `json:"status"` // 0 when forwarded
	Body           string     `json:"body,omitempty"`
	Location       string     `json:"location,omitempty"` // of a redirect
	Matched        *HTTPAllow `json:"matched,omitempty"`
	Allowed        bool       `json:"allowed"`
}

// TraceL7DNS is the DNS proxy's decision.
type TraceL7DNS struct {
	Query   string    `json:"query"`
	Matched *DNSAllow `json:"matched,omitempty"`
	Allowed bool      `json:"allowed"`
	Rcode   string    `json:"rcode,omitempty"` // REFUSED when denied
}

// Trace evaluates req against plan: the egress policy of the source when it
// is a local endpoint, then the ingress policy of the destination when it
// is one. The flow is allowed when every step allows it.
func Trace(plan *Plan, req TraceRequest) TraceResult {
	res := TraceResult{Verdict: TraceDenied}
	src, srcEP, err := resolveTracePeer(plan, req.From)
	if err != nil {
		res.Error = fmt.Sprintf("resolve source: %v", err)
		return res
	}
	dst, dstEP, err := resolveTracePeer(plan, req.To)
	if err != nil {
		res.Error = fmt.Sprintf("resolve destination: %v", err)
		return res
	}
	res.Source, res.Destination = src, dst
	allowed := true
	if srcEP != nil {
		st := traceDirection(srcEP, Egress, dst.Identity, req)
		res.Steps = append(res.Steps, st)
		allowed = allowed && st.Allowed
	}
	if dstEP != nil && allowed {
		st := traceDirection(dstEP, Ingress, src.Identity, req)
		res.Steps = append(res.Steps, st)
		allowed = allowed && st.Allowed
	}
	if allowed {
		res.Verdict = TraceAllowed
	}
	return res
}

func resolveTracePeer(plan *Plan, p TracePeer) (TraceEnd, *EndpointPlan, error) {
	if p.Name != "" {
		ep := plan.Endpoint(p.Namespace, p.Name)
		if ep == nil {
			return TraceEnd{}, nil, fmt.Errorf("no local endpoint %s/%s", p.Namespace, p.Name)
		}
		return TraceEnd{Peer: p, Identity: ep.Identity, Local: true, Via: "endpoint"}, ep, nil
	}
	if !p.IP.IsValid() {
		return TraceEnd{}, nil, fmt.Errorf("peer names neither an endpoint nor an address")
	}
	ip := p.IP.Unmap()
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		for _, a := range ep.Addresses {
			if a.Unmap() == ip {
				return TraceEnd{Peer: p, Identity: ep.Identity, Local: true, Via: "endpoint " + ep.Namespace + "/" + ep.Name}, ep, nil
			}
		}
	}
	id, pf, ok := plan.LookupIP(ip)
	if !ok {
		return TraceEnd{Peer: p, Identity: IDWorld, Via: "no ipcache entry: world"}, nil, nil
	}
	return TraceEnd{Peer: p, Identity: id, Via: "ipcache " + pf.String()}, nil, nil
}

// LookupIP resolves an address with a longest-prefix match on the ipcache.
func (p *Plan) LookupIP(a netip.Addr) (ID, netip.Prefix, bool) {
	a = a.Unmap()
	best := -1
	for i, e := range p.IPCache {
		if e.Prefix.Addr().Is4() == a.Is4() && e.Prefix.Contains(a) && (best < 0 || e.Prefix.Bits() > p.IPCache[best].Prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return IDUnknown, netip.Prefix{}, false
	}
	return p.IPCache[best].Identity, p.IPCache[best].Prefix, true
}

func traceDirection(ep *EndpointPlan, d Direction, remote ID, req TraceRequest) TraceStep {
	dp := ep.Direction(d)
	st := TraceStep{Direction: d.String(), Endpoint: ep.Namespace + "/" + ep.Name, Remote: remote, Enforced: dp.Enforced}
	var best *Entry
	for i := range dp.Entries {
		e := &dp.Entries[i]
		if (e.Identity == IDAny || e.Identity == remote) && (e.Proto == ProtoAny || e.Proto == req.Proto) && e.CoversPort(req.Port) {
			st.Entries = append(st.Entries, *e)
			if best == nil || e.Verdict > best.Verdict {
				best = e
			}
		}
	}
	if best != nil {
		cp := *best
		st.Decisive = &cp
	}
	switch {
	case best == nil && dp.Enforced:
		st.Reason = d.String() + " enforced and no entry covers the packet: dropped (default deny)"
	case best == nil:
		st.Allowed = true
		st.Reason = d.String() + " not enforced: allowed"
	case best.Verdict == VerdictDeny:
		st.Reason = "denied by " + refsString(best.DerivedFrom)
	case best.Verdict == VerdictAllow:
		st.Allowed = true
		st.Reason = "allowed by " + refsString(best.DerivedFrom)
	case best.Verdict == VerdictRedirect:
		st.Proxy = best.L7.String()
		st.Reason = "redirected to " + st.Proxy + " proxy by " + refsString(best.DerivedFrom)
		switch best.L7 {
		case L7HTTP:
			traceHTTP(&st, dp, remote, req)
		case L7DNS:
			traceDNS(&st, dp, remote, req)
		default:
			st.Reason += "; unknown proxy: dropped"
		}
	}
	return st
}

func refsString(refs []RuleRef) string {
	if len(refs) == 0 {
		return "(no rule)"
	}
	parts := make([]string, len(refs))
	for i, r := range refs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ", ")
}

// String renders "CiliumNetworkPolicy default/p (p.yaml doc 1) spec.ingress[0]".
func (r RuleRef) String() string {
	s := r.Policy
	if r.Source.File != "" {
		s += " (" + r.Source.File
		if r.Source.Doc > 0 {
			s += " doc " + itoa(r.Source.Doc)
		}
		s += ")"
	}
	if r.Path != "" {
		s += " " + r.Path
	}
	return s
}

func traceRemoteIn(remotes []ID, id ID) bool {
	if len(remotes) == 0 {
		return true
	}
	for _, r := range remotes {
		if r == id {
			return true
		}
	}
	return false
}

// String renders the result for humans, one step per line.
func (r TraceResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s -> %s: %s\n", r.Source.Peer, r.Destination.Peer, r.Verdict)
	if r.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", r.Error)
		return b.String()
	}
	fmt.Fprintf(&b, "  source identity %s (%s), destination identity %s (%s)\n", r.Source.Identity, r.Source.Via, r.Destination.Identity, r.Destination.Via)
	for _, s := range r.Steps {
		fmt.Fprintf(&b, "  %s of %s (enforced=%v): %s\n", s.Direction, s.Endpoint, s.Enforced, s.Reason)
		if s.Decisive != nil {
			e := s.Decisive
			fmt.Fprintf(&b, "    entry: identity %s %s/%s %s\n", e.Identity, e.Proto, e.PortsString(), e.Verdict)
		}
		if h := s.HTTP; h != nil {
			fmt.Fprintf(&b, "    http: path %q (%s)", h.NormalizedPath, h.Action)
			if h.Allowed {
				fmt.Fprintf(&b, ", allowed by %s\n", h.Matched.From)
			} else {
				fmt.Fprintf(&b, ", answered %d %q\n", h.Status, h.Body)
			}
		}
		if d := s.DNS; d != nil {
			if d.Allowed {
				fmt.Fprintf(&b, "    dns: the rules allow %s (%s)\n", d.Query, d.Matched.From)
			} else {
				fmt.Fprintf(&b, "    dns: %s answered %s\n", d.Query, d.Rcode)
			}
		}
	}
	return b.String()
}
