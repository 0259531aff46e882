package policy

import "net/netip"

// Kind is the kind of document a policy came from.
type Kind string

// Policy document kinds moat accepts.
const (
	KindCiliumNetworkPolicy            Kind = "CiliumNetworkPolicy"            // cilium.io/v2
	KindCiliumClusterwideNetworkPolicy Kind = "CiliumClusterwideNetworkPolicy" // cilium.io/v2
	KindMoatNetworkPolicy              Kind = "NetworkPolicy"                  // moat.io/v1alpha1
	KindMoatClusterwideNetworkPolicy   Kind = "ClusterwideNetworkPolicy"       // moat.io/v1alpha1
	KindKubernetesNetworkPolicy        Kind = "KubernetesNetworkPolicy"        // networking.k8s.io/v1 NetworkPolicy
)

// Source locates a policy document: the file and its 1-based document index.
type Source struct {
	File string `json:"file,omitempty"`
	Doc  int    `json:"doc,omitempty"`
}

// Policy is one parsed, validated policy document in moat's internal model.
// Every API flavour (moat, Cilium, Kubernetes) is converted into this form;
// the compiler only ever sees Policies.
type Policy struct {
	Kind      Kind   `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"` // "" for clusterwide policies
	Source    Source `json:"source"`
	Rules     []Rule `json:"rules"`
}

// Ref names the policy for traces: "CiliumNetworkPolicy default/rule1".
func (p *Policy) Ref() string {
	if p.Namespace == "" {
		return string(p.Kind) + " " + p.Name
	}
	return string(p.Kind) + " " + p.Namespace + "/" + p.Name
}

// Rule is one rule of a policy (a CNP `spec`, or one element of `specs`).
type Rule struct {
	// Path is the field path of the rule in its document ("spec", "specs[1]").
	Path        string `json:"path"`
	Description string `json:"description,omitempty"`
	// EndpointSelector selects the local endpoints the rule applies to. For
	// namespaced policies the parser has already added the namespace
	// requirement.
	EndpointSelector Selector `json:"endpointSelector"`

	Ingress     []PeerRule `json:"ingress,omitempty"`
	IngressDeny []PeerRule `json:"ingressDeny,omitempty"`
	Egress      []PeerRule `json:"egress,omitempty"`
	EgressDeny  []PeerRule `json:"egressDeny,omitempty"`

	// DefaultDenyIngress/Egress tell whether the rule puts the selected
	// endpoints into default deny for that direction. The parser sets them
	// from the presence of sections and from enableDefaultDeny.
	DefaultDenyIngress bool `json:"defaultDenyIngress,omitempty"`
	DefaultDenyEgress  bool `json:"defaultDenyEgress,omitempty"`
}

// Entity is a named group of peers.
type Entity string

// Entities of fromEntities/toEntities.
const (
	EntityWorld         Entity = "world"
	EntityCluster       Entity = "cluster"
	EntityHost          Entity = "host"
	EntityRemoteNode    Entity = "remote-node"
	EntityKubeAPIServer Entity = "kube-apiserver"
	EntityAll           Entity = "all"
)

// CIDRRule selects addresses inside Prefix but outside every Except prefix.
type CIDRRule struct {
	Prefix netip.Prefix   `json:"prefix"`
	Except []netip.Prefix `json:"except,omitempty"`
}

// FQDNSelector selects the addresses that DNS answers gave for matching
// names. Exactly one field is set.
type FQDNSelector struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// Peers is the L3 part of a peer rule. A Peers value with no field set
// selects every peer (a rule with only toPorts). Fields are OR'ed.
type Peers struct {
	Endpoints []Selector     `json:"endpoints,omitempty"`
	CIDRs     []CIDRRule     `json:"cidrs,omitempty"`
	Entities  []Entity       `json:"entities,omitempty"`
	FQDNs     []FQDNSelector `json:"fqdns,omitempty"`
}

// IsWildcard reports whether the peers select every remote.
func (p Peers) IsWildcard() bool {
	return len(p.Endpoints) == 0 && len(p.CIDRs) == 0 && len(p.Entities) == 0 && len(p.FQDNs) == 0
}

// PeerRule is one element of ingress/egress/ingressDeny/egressDeny.
type PeerRule struct {
	// Path is the field path in the document ("spec.egress[0]").
	Path  string `json:"path"`
	Peers Peers  `json:"peers"`
	// Ports lists the L4 restrictions; empty means every protocol and port.
	Ports []PortRule `json:"ports,omitempty"`
	// ICMPs lists allowed ICMP types; when set the rule covers only these.
	ICMPs []ICMPField `json:"icmps,omitempty"`
}

// Protocol is an IP protocol number; ProtoAny matches every protocol.
type Protocol uint8

// Protocols moat enforces.
const (
	ProtoAny    Protocol = 0
	ProtoICMP   Protocol = 1
	ProtoTCP    Protocol = 6
	ProtoUDP    Protocol = 17
	ProtoICMPv6 Protocol = 58
	ProtoSCTP   Protocol = 132
)

// IsICMP reports whether p is ICMP or ICMPv6, whose "port" is the ICMP type.
func (p Protocol) IsICMP() bool { return p == ProtoICMP || p == ProtoICMPv6 }

// String returns the protocol's name as policies spell it.
func (p Protocol) String() string {
	switch p {
	case ProtoAny:
		return "ANY"
	case ProtoICMP:
		return "ICMP"
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMPv6:
		return "ICMPv6"
	case ProtoSCTP:
		return "SCTP"
	}
	return "proto-" + itoa(int(p))
}

// PortRange is an inclusive port range; {0, 0} means every port. For ICMP
// entries the "port" is the ICMP type, and {0, 0} is type 0: ask the L4Key
// (AllPorts, CoversPort), which knows the protocol, rather than All.
type PortRange struct {
	From uint16 `json:"from"`
	To   uint16 `json:"to"`
}

// All reports whether the range covers every port.
func (r PortRange) All() bool { return r.From == 0 && (r.To == 0 || r.To == 65535) }

// Contains reports whether port lies in the range.
func (r PortRange) Contains(port uint16) bool {
	return r.All() || (port >= r.From && port <= r.To)
}

// String renders "80", "8000-8080" or "*".
func (r PortRange) String() string {
	if r.All() {
		return "*"
	}
	if r.From == r.To {
		return itoa(int(r.From))
	}
	return itoa(int(r.From)) + "-" + itoa(int(r.To))
}

// PortProtocol is one element of toPorts[].ports.
type PortProtocol struct {
	Ports PortRange `json:"ports"`
	Proto Protocol  `json:"proto"`
}

// PortRule is one element of toPorts: ports plus optional L7 rules. At most
// one of HTTP and DNS is non-nil; a non-nil empty slice still means "L7
// inspection on, every request allowed".
type PortRule struct {
	Path  string         `json:"path"`
	Ports []PortProtocol `json:"ports"`
	HTTP  []HTTPRule     `json:"http,omitempty"`
	DNS   []DNSRule      `json:"dns,omitempty"`
}

// HasL7 reports whether the port rule asks for L7 inspection.
func (r PortRule) HasL7() bool { return r.HTTP != nil || r.DNS != nil }

// HTTPRule is one HTTP rule. Method, Path and Host are RE2 expressions that
// must match the whole value; empty means any. Fields are AND'ed.
type HTTPRule struct {
	Path    string        `json:"path,omitempty"`
	Method  string        `json:"method,omitempty"`
	Host    string        `json:"host,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
	// FieldPath is where the rule stands in its document.
	FieldPath string `json:"fieldPath,omitempty"`
}

// HeaderMatch requires a header: present (Value == "" and !HasValue) or
// with an exact value.
type HeaderMatch struct {
	Name     string `json:"name"`
	Value    string `json:"value,omitempty"`
	HasValue bool   `json:"hasValue,omitempty"`
}

// DNSRule allows DNS queries for matching names. Exactly one field is set.
type DNSRule struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// ICMPField is one allowed ICMP type for a family ("IPv4" or "IPv6").
type ICMPField struct {
	Family string `json:"family"`
	Type   uint8  `json:"type"`
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var buf [20]byte
	i := len(buf)
	for n > 0 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return string(buf[i:])
}
