package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEndpoints(t *testing.T) {
	data := `
node: {name: node-1, addresses: [192.0.2.1]}
namespaces: [{name: prod, labels: {team: a}}]
endpoints:
- {name: deathstar, labels: {org: empire}, ipv4: 10.200.0.10, ipv6: "fd00:200::10"}
- {name: deathstar, namespace: prod, ipv4: 10.200.0.11, interface: veth-ds}
- {name: x, namespace: kube-system, ipv4: 10.200.0.12}
`
	f, err := ParseEndpoints("eps.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if f.Node.Name != "node-1" || len(f.Node.Addresses) != 1 {
		t.Errorf("node = %+v", f.Node)
	}
	ep := f.Endpoints[0]
	if ep.Namespace != "default" || ep.IPv4 != netip.MustParseAddr("10.200.0.10") || ep.IPv6 != netip.MustParseAddr("fd00:200::10") {
		t.Errorf("endpoint 0 = %+v", ep)
	}
	if f.Endpoints[1].Interface != "veth-ds" {
		t.Errorf("endpoint 1 = %+v", f.Endpoints[1])
	}
	tests := []struct {
		ns     string
		labels map[string]string
	}{
		{"prod", map[string]string{"team": "a", LabelNamespaceName: "prod"}},
		{"default", map[string]string{LabelNamespaceName: "default"}},
		{"kube-system", map[string]string{LabelNamespaceName: "kube-system"}},
	}
	for _, tt := range tests {
		t.Run(tt.ns, func(t *testing.T) {
			ns := f.NamespaceOf(tt.ns)
			if ns == nil {
				t.Fatal("namespace missing")
			}
			if len(ns.Labels) != len(tt.labels) {
				t.Fatalf("labels = %v, want %v", ns.Labels, tt.labels)
			}
			for k, v := range tt.labels {
				if ns.Labels[k] != v {
					t.Errorf("labels = %v, want %v", ns.Labels, tt.labels)
				}
			}
		})
	}
	if f.NamespaceOf("nope") != nil {
		t.Error("NamespaceOf(nope) != nil")
	}
}

func TestParseEndpointsErrors(t *testing.T) {
	tests := []struct {
		name, data, field, reason string
	}{
		{"missing name", "endpoints: [{ipv4: 10.0.0.1}]", "endpoints[0].name", "required"},
		{"duplicate name", "endpoints: [{name: a, ipv4: 10.0.0.1}, {name: a, namespace: default, ipv4: 10.0.0.2}]", "endpoints[1].name", "duplicate endpoint default/a"},
		{"missing ipv4", "endpoints: [{name: a}]", "endpoints[0].ipv4", "required"},
		{"ipv6 as ipv4", "endpoints: [{name: a, ipv4: 'fd00::1'}]", "endpoints[0].ipv4", "not an IPv4 address"},
		{"bad ipv4", "endpoints: [{name: a, ipv4: 10.0.0.300}]", "endpoints[0].ipv4", "10.0.0.300"},
		{"ipv4 as ipv6", "endpoints: [{name: a, ipv4: 10.0.0.1, ipv6: 10.0.0.2}]", "endpoints[0].ipv6", "not an IPv6 address"},
		{"duplicate address", "endpoints: [{name: a, ipv4: 10.0.0.1}, {name: b, ipv4: 10.0.0.1}]", "endpoints[1].ipv4", "already used by endpoints[0]"},
		{"unknown field", "endpoints: [{name: a, ipv4: 10.0.0.1, ip: 10.0.0.2}]", "endpoints[0].ip", "unknown field"},
		{"unknown top field", "endpoint: []", "endpoint", "unknown field"},
		{"bad label", "endpoints: [{name: a, ipv4: 10.0.0.1, labels: {app: 'a b'}}]", "endpoints[0].labels.app", "invalid label value"},
		{"duplicate namespace", "namespaces: [{name: a}, {name: a}]\nendpoints: []", "namespaces[1].name", "duplicate namespace"},
		{"two documents", "endpoints: []\n---\nendpoints: []", "", "one document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEndpoints("eps.yaml", []byte(tt.data))
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("want one FieldError, got %v", err)
			}
			if list[0].Field != tt.field || list[0].File != "eps.yaml" || !strings.Contains(list[0].Reason, tt.reason) {
				t.Errorf("got %v, want field %q reason containing %q", list[0], tt.field, tt.reason)
			}
		})
	}
}
