package policy

import "net/netip"

// Direction is the direction of traffic relative to the local endpoint.
type Direction uint8

// Directions.
const (
	Ingress Direction = 0 // traffic entering the endpoint
	Egress  Direction = 1 // traffic leaving the endpoint
)

// String returns "ingress" or "egress".
func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Verdict is the L4 decision of a Plan entry. Larger values take precedence
// when several entries cover the same traffic: deny over redirect over allow.
type Verdict uint8

// Verdicts.
const (
	VerdictNone     Verdict = 0
	VerdictAllow    Verdict = 1
	VerdictRedirect Verdict = 2
	VerdictDeny     Verdict = 3
)

// String returns the verdict's name.
func (v Verdict) String() string {
	switch v {
	case VerdictAllow:
		return "allow"
	case VerdictRedirect:
		return "redirect"
	case VerdictDeny:
		return "deny"
	}
	return "none"
}

// L7Kind says which proxy a redirect goes to.
type L7Kind uint8

// L7 kinds.
const (
	L7None L7Kind = 0
	L7HTTP L7Kind = 1
	L7DNS  L7Kind = 2
)

// String returns "", "http" or "dns".
func (k L7Kind) String() string {
	switch k {
	case L7HTTP:
		return "http"
	case L7DNS:
		return "dns"
	}
	return ""
}

// L4Key is what the datapath looks up: the remote identity (IDAny for every
// identity), protocol (ProtoAny for every protocol) and destination port
// range ({0,0} for every port). For ICMP and ICMPv6 the range is one ICMP
// type, {T,T}, and never "every type": {0,0} is type 0, echo reply.
type L4Key struct {
	Identity ID        `json:"identity"`
	Proto    Protocol  `json:"proto"`
	Ports    PortRange `json:"ports"`
}

// AllPorts reports whether k covers every port of its protocol: ProtoAny, or
// a port protocol with the {0,0} range. An ICMP key never does.
func (k L4Key) AllPorts() bool {
	return k.Proto == ProtoAny || (!k.Proto.IsICMP() && k.Ports.All())
}

// CoversPort reports whether k's range holds port (the ICMP type for ICMP).
func (k L4Key) CoversPort(port uint16) bool {
	return k.AllPorts() || (port >= k.Ports.From && port <= k.Ports.To)
}

// PortsString renders k's range: "*" for every port, the ICMP type or types
// for ICMP, else PortRange's form.
func (k L4Key) PortsString() string {
	if k.Proto.IsICMP() {
		if k.Ports.From == k.Ports.To {
			return itoa(int(k.Ports.From))
		}
		return itoa(int(k.Ports.From)) + "-" + itoa(int(k.Ports.To))
	}
	if k.AllPorts() {
		return "*"
	}
	return k.Ports.String()
}

// Entry is one L4 entry of a direction's policy.
//
// Lookup semantics, which the datapath implements and Trace checks against:
// an entry covers a packet (identity, proto, port) when its identity is IDAny
// or equal, its proto is ProtoAny or equal, and CoversPort(port) holds.
// The verdict is the highest Verdict among the covering entries; if none
// covers the packet it is dropped when the direction is Enforced and allowed
// otherwise (deny entries apply either way).
//
// The compiler guarantees a shape that makes this cheap: no two entries
// share a key; for one (Identity, Proto) pair the port ranges of entries are
// disjoint; an entry with ProtoAny covers every port. So at most four entries
// can cover a packet ((identity|any) x (proto|any)), and an LPM lookup on a
// port prefix finds each of them.
type Entry struct {
	L4Key
	Verdict Verdict `json:"verdict"`
	// L7 is set when Verdict is VerdictRedirect.
	L7 L7Kind `json:"l7,omitempty"`
	// DerivedFrom lists the rules that produced the entry (sorted, unique).
	DerivedFrom []RuleRef `json:"derivedFrom,omitempty"`
}

// RuleRef points at the policy rule that produced something.
type RuleRef struct {
	Policy string `json:"policy"` // Policy.Ref()
	Source Source `json:"source"`
	Path   string `json:"path"` // field path of the peer rule
}

// HTTPRuleSet holds the HTTP rules enforced by the HTTP proxy for traffic
// redirected at (Proto, Ports) in one direction of one endpoint.
type HTTPRuleSet struct {
	Proto Protocol    `json:"proto"`
	Ports PortRange   `json:"ports"`
	Rules []HTTPAllow `json:"rules"`
}

// HTTPAllow allows the HTTP requests matching Rule from (ingress) or to
// (egress) any of Remotes. An empty Remotes means every remote identity. A
// nil Rule allows every request (an L3/L4 allow that overlaps a redirect).
type HTTPAllow struct {
	Remotes []ID      `json:"remotes,omitempty"`
	Rule    *HTTPRule `json:"rule,omitempty"`
	From    RuleRef   `json:"from"`
}

// DNSRuleSet holds the DNS rules enforced by the DNS proxy at (Proto, Ports).
type DNSRuleSet struct {
	Proto Protocol   `json:"proto"`
	Ports PortRange  `json:"ports"`
	Rules []DNSAllow `json:"rules"`
}

// DNSAllow allows the queries matching Rule from (egress: to) Remotes; a nil
// Rule allows every query.
type DNSAllow struct {
	Remotes []ID     `json:"remotes,omitempty"`
	Rule    *DNSRule `json:"rule,omitempty"`
	From    RuleRef  `json:"from"`
}

// DirectionPlan is the policy of one endpoint in one direction.
type DirectionPlan struct {
	// Enforced is true when some policy selects the endpoint with a section
	// for this direction: traffic no entry allows is dropped.
	Enforced bool          `json:"enforced"`
	Entries  []Entry       `json:"entries,omitempty"`
	HTTP     []HTTPRuleSet `json:"http,omitempty"`
	DNS      []DNSRuleSet  `json:"dns,omitempty"`
}

// EndpointPlan is the compiled policy of one local endpoint.
type EndpointPlan struct {
	Name      string        `json:"name"`
	Namespace string        `json:"namespace"`
	Identity  ID            `json:"identity"`
	Addresses []netip.Addr  `json:"addresses,omitempty"`
	Ingress   DirectionPlan `json:"ingress"`
	Egress    DirectionPlan `json:"egress"`
}

// Direction returns the plan for d.
func (p *EndpointPlan) Direction(d Direction) *DirectionPlan {
	if d == Egress {
		return &p.Egress
	}
	return &p.Ingress
}

// IPCacheEntry maps a prefix to the identity of the addresses in it. The
// datapath resolves an address with a longest-prefix match.
type IPCacheEntry struct {
	Prefix   netip.Prefix `json:"prefix"`
	Identity ID           `json:"identity"`
}

// FQDNSelection is a toFQDNs selector in force, so the DNS proxy knows which
// answers to turn into ipcache entries.
type FQDNSelection struct {
	Selector FQDNSelector `json:"selector"`
	// Identity is the node-local identity the selector's addresses get.
	Identity ID `json:"identity"`
}

// Plan is the compiler's whole output for one node.
type Plan struct {
	// Generation numbers the Compiler's Plans (1, 2, …). Once a Plan is
	// applied everywhere, pass its generation to Compiler.ConfirmApplied.
	// It is not part of the Plan's content (two Plans of equal content
	// compare equal in JSON).
	Generation uint64 `json:"-"`

	Endpoints  []EndpointPlan  `json:"endpoints"`
	IPCache    []IPCacheEntry  `json:"ipcache"`
	Identities []Identity      `json:"identities"`
	FQDNs      []FQDNSelection `json:"fqdns,omitempty"`
}

// Endpoint returns the plan of namespace/name, or nil.
func (p *Plan) Endpoint(namespace, name string) *EndpointPlan {
	for i := range p.Endpoints {
		if p.Endpoints[i].Namespace == namespace && p.Endpoints[i].Name == name {
			return &p.Endpoints[i]
		}
	}
	return nil
}
