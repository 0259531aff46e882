package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// PortRule is one element of toPorts: ports plus optional L7 rules.
type PortRule struct {
	Ports []PortProtocol `json:"ports,omitempty"`
	Rules *L7Rules       `json:"rules,omitempty"`
}

// PortProtocol is one port (or range, with EndPort) and protocol.
// Protocol is TCP, UDP, SCTP or ANY (empty means ANY).
type PortProtocol struct {
	Port     PortValue `json:"port,omitempty"`
	EndPort  int32     `json:"endPort,omitempty"`
	Protocol string    `json:"protocol,omitempty"`
}

// PortValue is a port written as a string ("80", as Cilium's schema has
// it) or, for convenience, as a bare number. It is kept as its string form.
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
	HTTP []PortRuleHTTP `json:"http,omitempty"`
	DNS  []PortRuleDNS  `json:"dns,omitempty"`
}

// PortRuleHTTP is one HTTP rule. Method, Path and Host are RE2 expressions
// matched against the whole value. Headers are "Name" (must be present) or
// "Name: value" (exact value).
type PortRuleHTTP struct {
	Path          string        `json:"path,omitempty"`
	Method        string        `json:"method,omitempty"`
	Host          string        `json:"host,omitempty"`
	Headers       []string      `json:"headers,omitempty"`
	HeaderMatches []HeaderMatch `json:"headerMatches,omitempty"`
}

// HeaderMatch requires a header, with an exact value when Value is set.
type HeaderMatch struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// PortRuleDNS allows DNS queries for matching names.
type PortRuleDNS struct {
	MatchName    string `json:"matchName,omitempty"`
	MatchPattern string `json:"matchPattern,omitempty"`
}

// ICMPRule lists allowed ICMP types.
type ICMPRule struct {
	Fields []ICMPField `json:"fields,omitempty"`
}

// ICMPField is one ICMP type (a number or a name such as "EchoRequest")
// of a family ("IPv4", the default, or "IPv6").
type ICMPField struct {
	Type   intstr.IntOrString `json:"type"`
	Family string             `json:"family,omitempty"`
}
