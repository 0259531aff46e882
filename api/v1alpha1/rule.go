package v1alpha1

// Rule is one policy rule, field for field compatible with Cilium's
// api.Rule (the subset moat enforces). EndpointSelector picks the local
// endpoints; Ingress/Egress allow traffic, IngressDeny/EgressDeny deny it
// (L3/L4 only) and win over allows.
type Rule struct {
	EndpointSelector *LabelSelector `json:"endpointSelector,omitempty"`

	Ingress     []IngressRule `json:"ingress,omitempty"`
	IngressDeny []IngressRule `json:"ingressDeny,omitempty"`
	Egress      []EgressRule  `json:"egress,omitempty"`
	EgressDeny  []EgressRule  `json:"egressDeny,omitempty"`

	// EnableDefaultDeny overrides whether the rule puts the selected
	// endpoints into default deny. Unset means "yes, for each direction
	// the rule has rules in".
	EnableDefaultDeny *DefaultDenyConfig `json:"enableDefaultDeny,omitempty"`

	Description string `json:"description,omitempty"`
}

// DefaultDenyConfig is Rule.enableDefaultDeny.
type DefaultDenyConfig struct {
	Ingress *bool `json:"ingress,omitempty"`
	Egress  *bool `json:"egress,omitempty"`
}

// IngressRule is one element of ingress or ingressDeny. Peer fields are
// OR'ed; toPorts and icmps restrict the L4 part. In ingressDeny, toPorts
// must not carry L7 rules.
type IngressRule struct {
	FromEndpoints []LabelSelector `json:"fromEndpoints,omitempty"`
	FromCIDR      []string        `json:"fromCIDR,omitempty"`
	FromCIDRSet   []CIDRRule      `json:"fromCIDRSet,omitempty"`
	FromEntities  []string        `json:"fromEntities,omitempty"`

	ToPorts []PortRule `json:"toPorts,omitempty"`
	ICMPs   []ICMPRule `json:"icmps,omitempty"`
}

// EgressRule is one element of egress or egressDeny. In egressDeny,
// toFQDNs and L7 rules are not allowed.
type EgressRule struct {
	ToEndpoints []LabelSelector `json:"toEndpoints,omitempty"`
	ToCIDR      []string        `json:"toCIDR,omitempty"`
	ToCIDRSet   []CIDRRule      `json:"toCIDRSet,omitempty"`
	ToEntities  []string        `json:"toEntities,omitempty"`
	ToFQDNs     []FQDNSelector  `json:"toFQDNs,omitempty"`

	ToPorts []PortRule `json:"toPorts,omitempty"`
	ICMPs   []ICMPRule `json:"icmps,omitempty"`
}

// CIDRRule selects the addresses in CIDR except those in Except.
type CIDRRule struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// FQDNSelector selects the addresses DNS returned for matching names.
type FQDNSelector struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}
