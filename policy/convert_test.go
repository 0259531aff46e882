package policy

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// parseOne parses a single-document policy and fails the test on error.
func parseOne(t *testing.T, doc string) Policy {
	t.Helper()
	pols, err := ParseBytes("t.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(pols) != 1 {
		t.Fatalf("got %d policies, want 1", len(pols))
	}
	return pols[0]
}

const cnpHeader = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
const ccnpHeader = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"

func TestConvertNamespaceScoping(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantSel  string   // endpoint selector
		wantPeer []string // ingress[0] peer selectors
	}{
		{
			name:     "cnp default namespace",
			doc:      cnpHeader + "metadata: {name: a}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n",
			wantSel:  "{app In (web),k8s:io.kubernetes.pod.namespace In (default)}",
			wantPeer: []string{"{app In (client),k8s:io.kubernetes.pod.namespace In (default)}"},
		},
		{
			name:     "cnp explicit namespace and source prefixes",
			doc:      cnpHeader + "metadata: {name: a, namespace: prod}\nspec:\n  endpointSelector: {matchLabels: {'k8s:app': web}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {'any:app': client}}]\n",
			wantSel:  "{k8s:app In (web),k8s:io.kubernetes.pod.namespace In (prod)}",
			wantPeer: []string{"{any:app In (client),k8s:io.kubernetes.pod.namespace In (prod)}"},
		},
		{
			name:     "peer naming its namespace is not scoped",
			doc:      cnpHeader + "metadata: {name: a, namespace: prod}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints:\n    - matchLabels: {'k8s:io.kubernetes.pod.namespace': kube-system, k8s-app: kube-dns}\n    - matchExpressions: [{key: io.kubernetes.pod.namespace, operator: Exists}]\n",
			wantSel:  "{k8s:io.kubernetes.pod.namespace In (prod)}",
			wantPeer: []string{"{k8s-app In (kube-dns),k8s:io.kubernetes.pod.namespace In (kube-system)}", "{io.kubernetes.pod.namespace Exists}"},
		},
		{
			name:     "reserved peer is not scoped",
			doc:      cnpHeader + "metadata: {name: a}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{matchLabels: {'reserved:host': ''}}]\n",
			wantSel:  "{k8s:io.kubernetes.pod.namespace In (default)}",
			wantPeer: []string{"{reserved:host In ()}"},
		},
		{
			name:     "empty peer selector in cnp means own namespace",
			doc:      cnpHeader + "metadata: {name: a}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n",
			wantSel:  "{k8s:io.kubernetes.pod.namespace In (default)}",
			wantPeer: []string{"{k8s:io.kubernetes.pod.namespace In (default)}"},
		},
		{
			name:     "clusterwide is not scoped",
			doc:      ccnpHeader + "metadata: {name: a}\nspec:\n  endpointSelector: {matchExpressions: [{key: app, operator: In, values: [b, a]}, {key: tier, operator: DoesNotExist}]}\n  ingress:\n  - fromEndpoints: [{}]\n",
			wantSel:  "{app In (a,b),tier DoesNotExist}",
			wantPeer: []string{"{}"},
		},
		{
			name:     "moat namespaced policy",
			doc:      "apiVersion: moat.io/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: a, namespace: team}\nspecs:\n- endpointSelector: {matchExpressions: [{key: env, operator: NotIn, values: [dev]}]}\n  ingress:\n  - fromEndpoints: [{matchExpressions: [{key: role, operator: Exists}]}]\n",
			wantSel:  "{env NotIn (dev),k8s:io.kubernetes.pod.namespace In (team)}",
			wantPeer: []string{"{k8s:io.kubernetes.pod.namespace In (team),role Exists}"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseOne(t, tt.doc)
			r := p.Rules[0]
			if got := r.EndpointSelector.String(); got != tt.wantSel {
				t.Errorf("endpointSelector = %s, want %s", got, tt.wantSel)
			}
			var peers []string
			for _, s := range r.Ingress[0].Peers.Endpoints {
				peers = append(peers, s.String())
			}
			if !reflect.DeepEqual(peers, tt.wantPeer) {
				t.Errorf("peers = %q, want %q", peers, tt.wantPeer)
			}
		})
	}
}

func TestConvertDefaultDeny(t *testing.T) {
	tests := []struct {
		name                string
		spec                string
		wantIngress, wantEg bool
	}{
		{"no sections", "{endpointSelector: {}}", false, false},
		{"ingress rule", "{endpointSelector: {}, ingress: [{fromEntities: [world]}]}", true, false},
		{"empty ingress rule denies all", "{endpointSelector: {}, ingress: [{}]}", true, false},
		{"empty ingress list is no section", "{endpointSelector: {}, ingress: []}", false, false},
		{"egress deny only", "{endpointSelector: {}, egressDeny: [{toEntities: [world]}]}", false, true},
		{"ingress deny only", "{endpointSelector: {}, ingressDeny: [{fromEntities: [world]}]}", true, false},
		{"opt out", "{endpointSelector: {}, ingress: [{}], egress: [{}], enableDefaultDeny: {ingress: false}}", false, true},
		{"opt out egress", "{endpointSelector: {}, egress: [{}], enableDefaultDeny: {egress: false}}", false, false},
		{"explicit enable", "{endpointSelector: {}, enableDefaultDeny: {egress: true}}", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseOne(t, ccnpHeader+"metadata: {name: a}\nspec: "+tt.spec+"\n")
			r := p.Rules[0]
			if r.DefaultDenyIngress != tt.wantIngress || r.DefaultDenyEgress != tt.wantEg {
				t.Errorf("default deny ingress=%v egress=%v, want %v %v", r.DefaultDenyIngress, r.DefaultDenyEgress, tt.wantIngress, tt.wantEg)
			}
		})
	}
}

func TestConvertPortsAndL7(t *testing.T) {
	doc := ccnpHeader + `metadata: {name: a}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: [10.1.2.3/8, 192.0.2.1]
    toCIDRSet: [{cidr: 172.16.0.0/12, except: [172.16.1.0/24]}]
    toEntities: [world, kube-apiserver]
    toPorts:
    - ports: [{port: "0"}, {port: 8000, endPort: 8080, protocol: UDP}]
  - toFQDNs: [{matchName: api.example.com}, {matchPattern: "**.example.com"}]
    toPorts:
    - ports: [{port: "80", protocol: ANY}]
      rules:
        http:
        - method: GET
          path: /a/.*
          headers: ["X-Token: abc", "X-Present", "X-Spaced value"]
          headerMatches: [{name: X-Exact, value: "1"}, {name: X-Any}]
        - {}
    - ports: [{port: "53", protocol: UDP}]
      rules:
        dns: [{matchName: example.com}, {matchPattern: "*"}]
  - icmps: [{fields: [{type: 8}, {type: EchoRequest, family: IPv6}]}]
`
	r := parseOne(t, doc).Rules[0]
	e0 := r.Egress[0]
	wantCIDRs := []CIDRRule{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8")},
		{Prefix: netip.MustParsePrefix("192.0.2.1/32")},
		{Prefix: netip.MustParsePrefix("172.16.0.0/12"), Except: []netip.Prefix{netip.MustParsePrefix("172.16.1.0/24")}},
	}
	if !reflect.DeepEqual(e0.Peers.CIDRs, wantCIDRs) {
		t.Errorf("cidrs = %v, want %v", e0.Peers.CIDRs, wantCIDRs)
	}
	if !reflect.DeepEqual(e0.Peers.Entities, []Entity{EntityWorld, EntityKubeAPIServer}) {
		t.Errorf("entities = %v", e0.Peers.Entities)
	}
	wantPorts := []PortProtocol{{Ports: PortRange{}, Proto: ProtoAny}, {Ports: PortRange{From: 8000, To: 8080}, Proto: ProtoUDP}}
	if !reflect.DeepEqual(e0.Ports[0].Ports, wantPorts) || e0.Ports[0].HasL7() {
		t.Errorf("ports = %+v, want %+v without L7", e0.Ports[0], wantPorts)
	}
	if e0.Path != "spec.egress[0]" || e0.Ports[0].Path != "spec.egress[0].toPorts[0]" {
		t.Errorf("paths = %q %q", e0.Path, e0.Ports[0].Path)
	}

	e1 := r.Egress[1]
	if want := []FQDNSelector{{MatchName: "api.example.com"}, {MatchPattern: "**.example.com"}}; !reflect.DeepEqual(e1.Peers.FQDNs, want) {
		t.Errorf("fqdns = %v, want %v", e1.Peers.FQDNs, want)
	}
	wantHTTP := []HTTPRule{
		{Method: "GET", Path: "/a/.*", FieldPath: "spec.egress[1].toPorts[0].rules.http[0]", Headers: []HeaderMatch{
			{Name: "X-Token", Value: "abc", HasValue: true},
			{Name: "X-Present"},
			{Name: "X-Spaced", Value: "value", HasValue: true},
			{Name: "X-Exact", Value: "1", HasValue: true},
			{Name: "X-Any"},
		}},
		{FieldPath: "spec.egress[1].toPorts[0].rules.http[1]"},
	}
	if !reflect.DeepEqual(e1.Ports[0].HTTP, wantHTTP) {
		t.Errorf("http = %+v\nwant %+v", e1.Ports[0].HTTP, wantHTTP)
	}
	if e1.Ports[0].Ports[0] != (PortProtocol{Ports: PortRange{From: 80, To: 80}, Proto: ProtoAny}) {
		t.Errorf("http port = %+v", e1.Ports[0].Ports[0])
	}
	if want := []DNSRule{{MatchName: "example.com"}, {MatchPattern: "*"}}; !reflect.DeepEqual(e1.Ports[1].DNS, want) || e1.Ports[1].HTTP != nil {
		t.Errorf("dns = %+v, want %+v", e1.Ports[1], want)
	}
	if want := []ICMPField{{Family: "IPv4", Type: 8}, {Family: "IPv6", Type: 128}}; !reflect.DeepEqual(r.Egress[2].ICMPs, want) {
		t.Errorf("icmps = %v, want %v", r.Egress[2].ICMPs, want)
	}
}

func TestConvertSpecs(t *testing.T) {
	p := parseOne(t, cnpHeader+"metadata: {name: multi}\nspecs:\n- {endpointSelector: {}, description: one}\n- {endpointSelector: {}, description: two}\n")
	if len(p.Rules) != 2 || p.Rules[1].Path != "specs[1]" || p.Rules[1].Description != "two" {
		t.Fatalf("rules = %+v", p.Rules)
	}
	if p.Source != (Source{File: "t.yaml", Doc: 1}) || p.Ref() != "CiliumNetworkPolicy default/multi" {
		t.Errorf("source %+v ref %q", p.Source, p.Ref())
	}
}

func TestConvertList(t *testing.T) {
	doc := `apiVersion: v1
kind: List
items:
- ` + strings.ReplaceAll(cnpHeader+"metadata: {name: a}\nspec: {endpointSelector: {}}", "\n", "\n  ") + `
- ` + strings.ReplaceAll(cnpHeader+"metadata: {name: b}\nspec: {endpointSelector: {}, bogus: 1}", "\n", "\n  ") + `
`
	pols, err := ParseBytes("list.yaml", []byte(doc))
	if err == nil || !strings.Contains(err.Error(), "list.yaml: doc 1: items[1].spec.bogus: unknown field") {
		t.Fatalf("error = %v", err)
	}
	if len(pols) != 1 || pols[0].Name != "a" {
		t.Errorf("policies = %+v, want only a", pols)
	}
}
