package v1alpha1

// This file owns the rule types shared by every CiliumNetworkPolicy-like
// document, with the kubebuilder markers that become the CRD schema. The
// CEL rules mirror package policy's checks exactly where they can: they
// must never reject a document `moat policy validate` accepts.

// Rule is one policy rule, field for field compatible with Cilium's
// api.Rule (the subset moat enforces). EndpointSelector picks the local
// endpoints; Ingress/Egress allow traffic, IngressDeny/EgressDeny deny it
// (L3/L4 only) and win over allows.
type Rule struct {
	// EndpointSelector selects the endpoints the rule applies to; {}
	// selects every endpoint (of the namespace, in a namespaced policy).
	// +required
	EndpointSelector *LabelSelector `json:"endpointSelector,omitempty"`

	// Ingress allows traffic to the selected endpoints.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Ingress []IngressRule `json:"ingress,omitempty"`
	// IngressDeny denies traffic to the selected endpoints (L3/L4 only).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(r, !has(r.toPorts) || r.toPorts.all(p, !has(p.rules) || ((!has(p.rules.http) || size(p.rules.http) == 0) && (!has(p.rules.dns) || size(p.rules.dns) == 0))))",message="ingressDeny[].toPorts[].rules: L7 rules are not allowed in deny rules (ingressDeny/egressDeny are L3/L4 only)"
	// +kubebuilder:validation:MaxItems=16
	IngressDeny []IngressRule `json:"ingressDeny,omitempty"`
	// Egress allows traffic from the selected endpoints.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Egress []EgressRule `json:"egress,omitempty"`
	// EgressDeny denies traffic from the selected endpoints (L3/L4 only,
	// no toFQDNs).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(r, !has(r.toPorts) || r.toPorts.all(p, !has(p.rules) || ((!has(p.rules.http) || size(p.rules.http) == 0) && (!has(p.rules.dns) || size(p.rules.dns) == 0))))",message="egressDeny[].toPorts[].rules: L7 rules are not allowed in deny rules (ingressDeny/egressDeny are L3/L4 only)"
	// +kubebuilder:validation:XValidation:rule="self.all(r, !has(r.toFQDNs) || size(r.toFQDNs) == 0)",message="egressDeny[].toFQDNs: toFQDNs is not allowed in egressDeny"
	// +kubebuilder:validation:MaxItems=16
	EgressDeny []EgressRule `json:"egressDeny,omitempty"`

	// EnableDefaultDeny overrides whether the rule puts the selected
	// endpoints into default deny. Unset means "yes, for each direction
	// the rule has rules in".
	// +optional
	EnableDefaultDeny *DefaultDenyConfig `json:"enableDefaultDeny,omitempty"`

	// Description is free text.
	// +optional
	Description string `json:"description,omitempty"`
}

// DefaultDenyConfig is Rule.enableDefaultDeny.
type DefaultDenyConfig struct {
	// Ingress sets ingress default deny.
	// +optional
	Ingress *bool `json:"ingress,omitempty"`
	// Egress sets egress default deny.
	// +optional
	Egress *bool `json:"egress,omitempty"`
}

// IngressRule is one element of ingress or ingressDeny. Peer fields are
// OR'ed; toPorts and icmps restrict the L4 part. In ingressDeny, toPorts
// must not carry L7 rules.
//
// +kubebuilder:validation:XValidation:rule="!has(self.toPorts) || size(self.toPorts) == 0 || !has(self.icmps) || size(self.icmps) == 0",message="icmps cannot be combined with toPorts in one rule; write two rules",fieldPath=".icmps"
type IngressRule struct {
	// FromEndpoints selects peer endpoints by labels.
	// +optional
	// +listType=atomic
	FromEndpoints []LabelSelector `json:"fromEndpoints,omitempty"`
	// FromCIDR lists peer prefixes ("10.0.0.0/8") or addresses.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F.]*:[0-9a-fA-F:.]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$`
	// +kubebuilder:validation:MaxItems=64
	FromCIDR []string `json:"fromCIDR,omitempty"`
	// FromCIDRSet lists peer prefixes with exceptions.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	FromCIDRSet []CIDRRule `json:"fromCIDRSet,omitempty"`
	// FromEntities lists peer entities.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:Enum=world;cluster;host;remote-node;kube-apiserver;all
	FromEntities []string `json:"fromEntities,omitempty"`

	// ToPorts restricts the ports (and adds L7 rules).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortRule `json:"toPorts,omitempty"`
	// ICMPs restricts ICMP types; not together with toPorts.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	ICMPs []ICMPRule `json:"icmps,omitempty"`
}

// EgressRule is one element of egress or egressDeny. In egressDeny,
// toFQDNs and L7 rules are not allowed.
//
// +kubebuilder:validation:XValidation:rule="!has(self.toPorts) || size(self.toPorts) == 0 || !has(self.icmps) || size(self.icmps) == 0",message="icmps cannot be combined with toPorts in one rule; write two rules",fieldPath=".icmps"
type EgressRule struct {
	// ToEndpoints selects peer endpoints by labels.
	// +optional
	// +listType=atomic
	ToEndpoints []LabelSelector `json:"toEndpoints,omitempty"`
	// ToCIDR lists peer prefixes ("10.0.0.0/8") or addresses.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F.]*:[0-9a-fA-F:.]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$`
	// +kubebuilder:validation:MaxItems=64
	ToCIDR []string `json:"toCIDR,omitempty"`
	// ToCIDRSet lists peer prefixes with exceptions.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ToCIDRSet []CIDRRule `json:"toCIDRSet,omitempty"`
	// ToEntities lists peer entities.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:Enum=world;cluster;host;remote-node;kube-apiserver;all
	ToEntities []string `json:"toEntities,omitempty"`
	// ToFQDNs selects peers by the DNS names they were resolved from.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	ToFQDNs []FQDNSelector `json:"toFQDNs,omitempty"`

	// ToPorts restricts the ports (and adds L7 rules).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	ToPorts []PortRule `json:"toPorts,omitempty"`
	// ICMPs restricts ICMP types; not together with toPorts.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	ICMPs []ICMPRule `json:"icmps,omitempty"`
}

// CIDRRule selects the addresses in CIDR except those in Except. That
// every exception lies inside CIDR is checked by moat, not the schema.
//
// The CIDR fields are checked with a pattern rather than CEL's isCIDR
// (whose cost, multiplied by the list sizes, would exceed the CRD's CEL
// budget): IPv4 addresses and prefixes exactly as moat parses them, IPv6
// ones only by their characters and prefix length; moat's validation
// reports the remaining IPv6 syntax errors.
type CIDRRule struct {
	// CIDR is a prefix ("10.0.0.0/8") or an address.
	// +required
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F.]*:[0-9a-fA-F:.]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$`
	CIDR string `json:"cidr"`
	// Except lists prefixes inside CIDR that are not selected.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F.]*:[0-9a-fA-F:.]*(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$`
	// +kubebuilder:validation:MaxItems=32
	Except []string `json:"except,omitempty"`
}

// FQDNSelector selects the addresses DNS returned for matching names.
// Exactly one of MatchName and MatchPattern is set.
//
// +kubebuilder:validation:XValidation:rule="(has(self.matchName) && size(self.matchName) > 0) != (has(self.matchPattern) && size(self.matchPattern) > 0)",message="set exactly one of matchName and matchPattern"
type FQDNSelector struct {
	// MatchName is a DNS name.
	// +optional
	MatchName string `json:"matchName,omitempty"`
	// MatchPattern is a DNS name with '*' wildcards.
	// +optional
	MatchPattern string `json:"matchPattern,omitempty"`
}
