package policy

import (
	"net/netip"
	"reflect"
	"testing"
)

const knpHeader = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"

func TestConvertKubernetesNetworkPolicy(t *testing.T) {
	type peerRule struct {
		path  string
		peers []string // selector strings, then CIDR rules as "cidr except ..."
		ports []PortProtocol
	}
	tests := []struct {
		name          string
		doc           string
		wantSel       string
		wantDenyIn    bool
		wantDenyEg    bool
		wantIngress   []peerRule
		wantEgress    []peerRule
		wantWildcards []bool // per ingress rule
	}{
		{
			name:       "default deny ingress with empty list",
			doc:        knpHeader + "metadata: {name: deny, namespace: prod}\nspec: {podSelector: {}, policyTypes: [Ingress], ingress: []}\n",
			wantSel:    "{k8s:io.kubernetes.pod.namespace In (prod)}",
			wantDenyIn: true,
		},
		{
			name:       "policyTypes default: ingress only",
			doc:        knpHeader + "metadata: {name: a}\nspec: {podSelector: {matchLabels: {app: db}}}\n",
			wantSel:    "{app In (db),k8s:io.kubernetes.pod.namespace In (default)}",
			wantDenyIn: true,
		},
		{
			name:       "policyTypes default: egress when egress rules exist",
			doc:        knpHeader + "metadata: {name: a}\nspec:\n  podSelector: {}\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.5.0/24]}}]\n    ports: [{port: 443}, {protocol: UDP, port: 5000, endPort: 5100}, {protocol: SCTP}]\n",
			wantSel:    "{k8s:io.kubernetes.pod.namespace In (default)}",
			wantDenyIn: true,
			wantDenyEg: true,
			wantEgress: []peerRule{{
				path:  "spec.egress[0]",
				peers: []string{"10.0.0.0/8 except [10.0.5.0/24]"},
				ports: []PortProtocol{{Ports: PortRange{443, 443}, Proto: ProtoTCP}, {Ports: PortRange{5000, 5100}, Proto: ProtoUDP}, {Proto: ProtoSCTP}},
			}},
		},
		{
			name:       "ingress rules ignored when policyTypes is Egress only",
			doc:        knpHeader + "metadata: {name: a}\nspec: {podSelector: {}, policyTypes: [Egress], ingress: [{}]}\n",
			wantSel:    "{k8s:io.kubernetes.pod.namespace In (default)}",
			wantDenyEg: true,
		},
		{
			name:       "peers",
			doc:        knpHeader + "metadata: {name: a, namespace: backend}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n    - namespaceSelector: {matchLabels: {team: a}}\n    - namespaceSelector: {}\n    - namespaceSelector: {matchLabels: {team: b}}\n      podSelector: {matchLabels: {app: ui}}\n  - {}\n",
			wantSel:    "{k8s:io.kubernetes.pod.namespace In (backend)}",
			wantDenyIn: true,
			wantIngress: []peerRule{
				{path: "spec.ingress[0]", peers: []string{
					"{app In (web),k8s:io.kubernetes.pod.namespace In (backend)}",
					"{k8s:io.cilium.k8s.namespace.labels.team In (a),k8s:io.kubernetes.pod.namespace Exists}",
					"{k8s:io.kubernetes.pod.namespace Exists}",
					"{app In (ui),k8s:io.cilium.k8s.namespace.labels.team In (b),k8s:io.kubernetes.pod.namespace Exists}",
				}},
				{path: "spec.ingress[1]"},
			},
			wantWildcards: []bool{false, true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := parseOne(t, tt.doc)
			if p.Kind != KindKubernetesNetworkPolicy || len(p.Rules) != 1 {
				t.Fatalf("kind %s, %d rules", p.Kind, len(p.Rules))
			}
			r := p.Rules[0]
			if got := r.EndpointSelector.String(); got != tt.wantSel {
				t.Errorf("selector = %s, want %s", got, tt.wantSel)
			}
			if r.DefaultDenyIngress != tt.wantDenyIn || r.DefaultDenyEgress != tt.wantDenyEg {
				t.Errorf("default deny = %v/%v, want %v/%v", r.DefaultDenyIngress, r.DefaultDenyEgress, tt.wantDenyIn, tt.wantDenyEg)
			}
			check := func(dir string, got []PeerRule, want []peerRule) {
				if len(got) != len(want) {
					t.Fatalf("%s: %d rules, want %d", dir, len(got), len(want))
				}
				for i, w := range want {
					g := got[i]
					var peers []string
					for _, s := range g.Peers.Endpoints {
						peers = append(peers, s.String())
					}
					for _, c := range g.Peers.CIDRs {
						peers = append(peers, c.Prefix.String()+" except "+formatPrefixes(c.Except))
					}
					if g.Path != w.path || !reflect.DeepEqual(peers, w.peers) {
						t.Errorf("%s[%d] = %s %q, want %s %q", dir, i, g.Path, peers, w.path, w.peers)
					}
					var ports []PortProtocol
					for _, pr := range g.Ports {
						ports = append(ports, pr.Ports...)
					}
					if !reflect.DeepEqual(ports, w.ports) {
						t.Errorf("%s[%d] ports = %v, want %v", dir, i, ports, w.ports)
					}
				}
			}
			check("ingress", r.Ingress, tt.wantIngress)
			check("egress", r.Egress, tt.wantEgress)
			for i, w := range tt.wantWildcards {
				if r.Ingress[i].Peers.IsWildcard() != w {
					t.Errorf("ingress[%d] wildcard = %v, want %v", i, !w, w)
				}
			}
		})
	}
}

func formatPrefixes(ps []netip.Prefix) string {
	s := "["
	for i, p := range ps {
		if i > 0 {
			s += " "
		}
		s += p.String()
	}
	return s + "]"
}
