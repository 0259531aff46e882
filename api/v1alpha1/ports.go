package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Port values in the CEL rules below: a port is an integer or a string
// that strconv.ParseInt reads ("80", "+80", "080"); "", "0" and omitted
// mean every port. The rules convert a string port with int() only where
// PortValue's pattern makes it a number (an invalid port fails that
// pattern first). "L7 rules need a specific port" treats only 0, "" and
// "0" as zero: other spellings of zero ("00", "+0") are left to moat's
// validation. The list limits (MaxItems) exist because the apiserver
// bounds the estimated CEL cost of a CRD; moat itself has no limits.

// PortRule is one element of toPorts: ports plus optional L7 rules. L7
// rules need at least one specific port; HTTP rules need protocol TCP or
// ANY, DNS rules anything but SCTP; http and dns do not mix.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || !has(self.rules.http) || size(self.rules.http) == 0 || !has(self.rules.dns) || size(self.rules.dns) == 0",message="rules: http and dns rules cannot be combined in one toPorts element",fieldPath=".rules"
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || ((!has(self.rules.http) || size(self.rules.http) == 0) && (!has(self.rules.dns) || size(self.rules.dns) == 0)) || (has(self.ports) && size(self.ports) > 0)",message="ports: L7 rules need at least one port",fieldPath=".ports",reason=FieldValueRequired
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || ((!has(self.rules.http) || size(self.rules.http) == 0) && (!has(self.rules.dns) || size(self.rules.dns) == 0)) || !has(self.ports) || self.ports.all(p, has(p.port) && (type(p.port) == int ? p.port != 0 : (size(p.port) > 0 && p.port != '0')))",message="ports[].port: L7 rules need a specific port (not 0 or empty)",fieldPath=".ports"
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || !has(self.rules.http) || size(self.rules.http) == 0 || !has(self.ports) || self.ports.all(p, !has(p.protocol) || (p.protocol != 'UDP' && p.protocol != 'SCTP'))",message="ports[].protocol: HTTP rules need protocol TCP or ANY",fieldPath=".ports"
// +kubebuilder:validation:XValidation:rule="!has(self.rules) || !has(self.rules.dns) || size(self.rules.dns) == 0 || !has(self.ports) || self.ports.all(p, !has(p.protocol) || p.protocol != 'SCTP')",message="ports[].protocol: DNS rules need protocol UDP, TCP or ANY",fieldPath=".ports"
type PortRule struct {
	// Ports lists ports or port ranges; empty means every port.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=40
	Ports []PortProtocol `json:"ports,omitempty"`
	// Rules adds L7 rules (HTTP or DNS) to the ports.
	// +optional
	Rules *L7Rules `json:"rules,omitempty"`
}

// PortProtocol is one port (or range, with EndPort) and protocol.
// Protocol is TCP, UDP, SCTP or ANY (empty means ANY).
//
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort == 0 || (has(self.port) && (type(self.port) == int ? self.port != 0 : (size(self.port) > 0 && int(self.port) != 0)))",message="endPort requires a non-zero port",fieldPath=".endPort"
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || self.endPort == 0 || !has(self.port) || (type(self.port) == int ? self.endPort >= self.port : (size(self.port) == 0 || self.endPort >= int(self.port)))",message="toPorts[].ports[].endPort must not be below port",fieldPath=".endPort"
type PortProtocol struct {
	// Port is a port number, as a string ("80") or a number; "" or "0"
	// means every port. Named ports are not supported.
	// +optional
	Port PortValue `json:"port,omitempty"`
	// EndPort makes Port..EndPort a range.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=65535
	EndPort int32 `json:"endPort,omitempty"`
	// Protocol is TCP, UDP, SCTP or ANY; empty means ANY. ICMP is written
	// in icmps, not here.
	// +optional
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:Enum="";TCP;UDP;SCTP;ANY
	Protocol string `json:"protocol,omitempty"`
}

// PortValue is a port written as a string ("80", as Cilium's schema has
// it) or, for convenience, as a bare number. It is kept as its string form.
//
// The schema checks a string with a pattern (no CEL cost: the budget is
// better spent on cross-field rules): empty or a number in 0..65535
// written the way strconv.ParseInt reads it ("80", "+80", "0080"; "-0" is
// 0). An integer is checked by a cheap CEL rule.
//
// +kubebuilder:validation:XIntOrString
// +kubebuilder:validation:Type=""
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="type(self) != int || (self >= 0 && self <= 65535)",message="port must be in range 0-65535"
// +kubebuilder:validation:Pattern=`^(\+?0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])|-0+)?$`
type PortValue string

// UnmarshalJSON accepts a JSON string or an integer.
func (p *PortValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = PortValue(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("expected a port number or string, got %s", b)
	}
	if _, err := n.Int64(); err != nil {
		return fmt.Errorf("expected an integer port, got %s", n)
	}
	*p = PortValue(n.String())
	return nil
}

// L7Rules holds the L7 rules of a port rule; at most one kind is set.
type L7Rules struct {
	// HTTP lists allowed HTTP requests.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	HTTP []PortRuleHTTP `json:"http,omitempty"`
	// DNS lists allowed DNS queries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	DNS []PortRuleDNS `json:"dns,omitempty"`
}

// PortRuleHTTP is one HTTP rule. Method, Path and Host are RE2 expressions
// matched against the whole value. Headers are "Name" (must be present) or
// "Name: value" (exact value). The regex syntax is checked by moat (the
// Valid status condition), not by the schema.
type PortRuleHTTP struct {
	// Path is an RE2 expression matched against the whole path.
	// +optional
	Path string `json:"path,omitempty"`
	// Method is an RE2 expression matched against the whole method.
	// +optional
	Method string `json:"method,omitempty"`
	// Host is an RE2 expression matched against the whole host.
	// +optional
	Host string `json:"host,omitempty"`
	// Headers lists "Name" (present) or "Name: value" (exact value).
	// +optional
	// +listType=atomic
	Headers []string `json:"headers,omitempty"`
	// HeaderMatches lists headers by name and value.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
}

// HeaderMatch requires a header, with an exact value when Value is set.
type HeaderMatch struct {
	// Name is the header name, an HTTP token.
	// +required
	// +kubebuilder:validation:Pattern="^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"
	Name string `json:"name"`
	// Value is the exact value; empty means the header must be present.
	// +optional
	Value string `json:"value,omitempty"`
}

// PortRuleDNS allows DNS queries for matching names. Exactly one of
// MatchName and MatchPattern is set; their syntax is checked by moat.
//
// +kubebuilder:validation:XValidation:rule="(has(self.matchName) && size(self.matchName) > 0) != (has(self.matchPattern) && size(self.matchPattern) > 0)",message="set exactly one of matchName and matchPattern"
type PortRuleDNS struct {
	// MatchName is a DNS name.
	// +optional
	MatchName string `json:"matchName,omitempty"`
	// MatchPattern is a DNS name with '*' wildcards.
	// +optional
	MatchPattern string `json:"matchPattern,omitempty"`
}

// ICMPRule lists allowed ICMP types.
type ICMPRule struct {
	// Fields lists the ICMP types; at least one.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=40
	Fields []ICMPField `json:"fields,omitempty"`
}

// ICMPField is one ICMP type (a number or a name such as "EchoRequest")
// of a family ("IPv4", the default, or "IPv6").
//
// The schema checks an integer type's range; a string type (a number or
// a name, which depends on the family) is left to moat's validation.
//
// +kubebuilder:validation:XValidation:rule="type(self.type) != int || (self.type >= 0 && self.type <= 255)",message="type: ICMP type out of range 0-255",fieldPath=".type"
type ICMPField struct {
	// Type is an ICMP type number (0..255) or name (EchoRequest, ...).
	// +required
	Type intstr.IntOrString `json:"type"`
	// Family is IPv4 (the default) or IPv6.
	// +optional
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:Enum="";IPv4;IPv6
	Family string `json:"family,omitempty"`
}
