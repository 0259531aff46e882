package policy

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// resolveRemote turns a test reference into an identity: "ns/name" for an
// endpoint, "ip:A" for an address (longest prefix in the ipcache), or a
// number.
func resolveRemote(t *testing.T, p *Plan, ref string) ID {
	t.Helper()
	if a, ok := strings.CutPrefix(ref, "ip:"); ok {
		id, _, ok := p.LookupIP(netip.MustParseAddr(a))
		if !ok {
			t.Fatalf("no ipcache entry for %s", a)
		}
		return id
	}
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		ep := p.Endpoint(ns, name)
		if ep == nil {
			t.Fatalf("no endpoint %s", ref)
		}
		return ep.Identity
	}
	n, err := strconv.Atoi(ref)
	if err != nil {
		t.Fatalf("bad remote %q", ref)
	}
	return ID(n)
}

type flowCheck struct {
	ep     string // ns/name of the local endpoint
	dir    Direction
	remote string
	proto  Protocol
	port   uint16
	want   string // allow, drop, deny, redirect-http, redirect-dns
}

func TestCompileSemantics(t *testing.T) {
	t.Parallel()
	ns := []Namespace{{Name: "default", Labels: map[string]string{"team": "a"}}, {Name: "other", Labels: map[string]string{"team": "b"}}}
	eps := []Endpoint{
		tep("default", "web", "10.0.1.1", "app=web"),
		tep("default", "client", "10.0.1.2", "app=client"),
		tep("default", "admin", "10.0.1.3", "app=admin"),
		tep("other", "client", "10.0.2.2", "app=client"),
	}
	node := Node{Name: "n1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.10")}}
	web := tsel("default", "app=web")
	client := tsel("default", "app=client")
	admin := tsel("default", "app=admin")
	httpGet := []PortRule{{Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 80, To: 80}}}, HTTP: []HTTPRule{{Method: "GET", Path: "/public"}}}}

	tests := []struct {
		name     string
		policies []Policy
		opts     Options
		checks   []flowCheck
		extra    func(t *testing.T, p *Plan)
	}{
		{
			name: "l3 selector",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 80, "drop"},
				{"default/web", Ingress, "other/client", ProtoTCP, 80, "drop"},
				{"default/web", Egress, "default/admin", ProtoTCP, 80, "allow"},
				{"default/client", Ingress, "default/admin", ProtoTCP, 80, "allow"},
			},
		},
		{
			name: "namespace labels",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("", LabelNamespaceLabelsPrefix+"team=b", "app=client")}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "other/client", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "drop"},
			},
		},
		{
			name: "entity world and cidr identities",
			policies: []Policy{
				tpol("default", "p", Rule{EndpointSelector: web, Egress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityWorld}}}}}),
				tpol("default", "q", Rule{EndpointSelector: admin, Egress: []PeerRule{{Peers: Peers{CIDRs: []CIDRRule{{Prefix: netip.MustParsePrefix("8.8.0.0/16")}}}}}}),
			},
			checks: []flowCheck{
				{"default/web", Egress, "ip:1.1.1.1", ProtoTCP, 443, "allow"},
				{"default/web", Egress, "ip:8.8.8.8", ProtoTCP, 443, "allow"},
				{"default/web", Egress, "ip:2001:db8::1", ProtoUDP, 53, "allow"},
				{"default/web", Egress, "default/client", ProtoTCP, 80, "drop"},
				{"default/web", Egress, "ip:192.168.0.10", ProtoTCP, 80, "drop"},
			},
		},
		{
			name: "entity host",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityHost}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "ip:192.168.0.10", ProtoTCP, 8080, "allow"},
				{"default/web", Ingress, "ip:1.1.1.1", ProtoTCP, 8080, "drop"},
				{"default/web", Ingress, "default/client", ProtoTCP, 8080, "drop"},
			},
		},
		{
			name: "reserved host selector",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("", "reserved:host=")}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "1", ProtoTCP, 8080, "allow"},
				{"default/web", Ingress, "2", ProtoTCP, 8080, "drop"},
			},
		},
		{
			name: "entity cluster",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Egress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityCluster}}}}})},
			checks: []flowCheck{
				{"default/web", Egress, "other/client", ProtoTCP, 80, "allow"},
				{"default/web", Egress, "ip:192.168.0.10", ProtoTCP, 80, "allow"},
				{"default/web", Egress, "6", ProtoTCP, 80, "allow"},
				{"default/web", Egress, "ip:1.1.1.1", ProtoTCP, 80, "drop"},
			},
		},
		{
			name: "entity all",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Egress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityAll}}, Ports: tports(ProtoTCP, 443)}}})},
			checks: []flowCheck{
				{"default/web", Egress, "ip:1.1.1.1", ProtoTCP, 443, "allow"},
				{"default/web", Egress, "default/client", ProtoTCP, 443, "allow"},
				{"default/web", Egress, "default/client", ProtoTCP, 80, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				es := p.Endpoint("default", "web").Egress.Entries
				if len(es) != 1 || es[0].Identity != IDAny {
					t.Errorf("entries = %+v, want one IDAny entry", es)
				}
			},
		},
		{
			name: "cidr with except and nested prefix",
			policies: []Policy{
				tpol("default", "p", Rule{EndpointSelector: web, Egress: []PeerRule{{Peers: Peers{CIDRs: []CIDRRule{{
					Prefix: netip.MustParsePrefix("172.16.0.0/12"), Except: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/16")}}}}}}}),
				tpol("default", "q", Rule{EndpointSelector: admin, Egress: []PeerRule{{Peers: Peers{CIDRs: []CIDRRule{
					{Prefix: netip.MustParsePrefix("172.17.0.0/16")}, {Prefix: netip.MustParsePrefix("172.20.1.0/24")}}}}}}),
			},
			checks: []flowCheck{
				{"default/web", Egress, "ip:172.16.0.1", ProtoTCP, 80, "allow"},
				{"default/web", Egress, "ip:172.17.3.4", ProtoTCP, 80, "allow"},
				{"default/web", Egress, "ip:172.20.0.1", ProtoTCP, 80, "drop"},
				{"default/web", Egress, "ip:172.20.1.1", ProtoTCP, 80, "drop"},
				{"default/web", Egress, "ip:172.32.0.1", ProtoTCP, 80, "drop"},
				{"default/admin", Egress, "ip:172.20.1.9", ProtoTCP, 80, "allow"},
				{"default/admin", Egress, "ip:172.20.2.9", ProtoTCP, 80, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				var cidrs []string
				for _, e := range p.IPCache {
					if e.Identity.IsLocal() {
						cidrs = append(cidrs, e.Prefix.String())
					}
				}
				want := "172.16.0.0/12 172.17.0.0/16 172.20.0.0/16 172.20.1.0/24"
				if got := strings.Join(cidrs, " "); got != want {
					t.Errorf("cidr ipcache = %s, want %s", got, want)
				}
			},
		},
		{
			name: "port range",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web, Ingress: []PeerRule{{
				Peers: Peers{Endpoints: []Selector{client}},
				Ports: []PortRule{{Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 8000, To: 8080}}}}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 8000, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 8080, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 8081, "drop"},
				{"default/web", Ingress, "default/client", ProtoUDP, 8042, "drop"},
			},
		},
		{
			name: "any expands to tcp udp sctp",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web, Ingress: []PeerRule{{
				Peers: Peers{Endpoints: []Selector{client}}, Ports: tports(ProtoAny, 53)}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 53, "allow"},
				{"default/web", Ingress, "default/client", ProtoUDP, 53, "allow"},
				{"default/web", Ingress, "default/client", ProtoSCTP, 53, "allow"},
				{"default/web", Ingress, "default/client", ProtoICMP, 53, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				if n := len(p.Endpoint("default", "web").Ingress.Entries); n != 3 {
					t.Errorf("%d entries, want 3", n)
				}
			},
		},
		{
			name: "deny wins over allow",
			policies: []Policy{
				tpol("default", "allow", Rule{EndpointSelector: web, Ingress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityCluster}}}}}),
				tpol("default", "deny", Rule{EndpointSelector: web, IngressDeny: []PeerRule{{
					Peers: Peers{Endpoints: []Selector{client}},
					Ports: []PortRule{{Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 20, To: 25}}}}}}}}),
			},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 22, "deny"},
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 22, "allow"},
			},
		},
		{
			name: "default deny per direction",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "ip:1.1.1.1", ProtoTCP, 80, "drop"},
				{"default/web", Egress, "ip:1.1.1.1", ProtoTCP, 80, "allow"},
			},
			extra: func(t *testing.T, p *Plan) {
				ep := p.Endpoint("default", "web")
				if !ep.Ingress.Enforced || ep.Egress.Enforced {
					t.Errorf("enforced ingress=%v egress=%v, want true false", ep.Ingress.Enforced, ep.Egress.Enforced)
				}
			},
		},
		{
			name: "default deny off",
			policies: func() []Policy {
				p := tpol("default", "p", Rule{EndpointSelector: web,
					Ingress:     []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}}},
					IngressDeny: []PeerRule{{Peers: Peers{Endpoints: []Selector{admin}}}}})
				p.Rules[0].DefaultDenyIngress = false
				return []Policy{p}
			}(),
			checks: []flowCheck{
				{"default/web", Ingress, "ip:1.1.1.1", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 80, "deny"},
			},
		},
		{
			name: "icmp",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web, Ingress: []PeerRule{{
				Peers: Peers{Endpoints: []Selector{client}},
				ICMPs: []ICMPField{{Family: "IPv4", Type: 8}, {Family: "IPv6", Type: 128}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoICMP, 8, "allow"},
				{"default/web", Ingress, "default/client", ProtoICMP, 13, "drop"},
				{"default/web", Ingress, "default/client", ProtoICMPv6, 128, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 8, "drop"},
			},
		},
		{
			name: "http redirect",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web, Ingress: []PeerRule{{
				Peers: Peers{Endpoints: []Selector{client}}, Ports: httpGet}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "redirect-http"},
				{"default/web", Ingress, "default/client", ProtoTCP, 81, "drop"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 80, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				ep := p.Endpoint("default", "web")
				cl := p.Endpoint("default", "client").Identity
				if len(ep.Ingress.HTTP) != 1 {
					t.Fatalf("http rule sets = %+v", ep.Ingress.HTTP)
				}
				rs := ep.Ingress.HTTP[0]
				if rs.Proto != ProtoTCP || rs.Ports != (PortRange{80, 80}) || len(rs.Rules) != 1 ||
					rs.Rules[0].Rule == nil || rs.Rules[0].Rule.Path != "/public" || !slices.Equal(rs.Rules[0].Remotes, []ID{cl}) {
					t.Errorf("rule set = %+v", rs)
				}
			},
		},
		{
			name: "allow-all peer does not widen http rule",
			policies: []Policy{
				tpol("default", "http", Rule{EndpointSelector: web, Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}, Ports: httpGet}}}),
				tpol("default", "admin", Rule{EndpointSelector: web, Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{admin}}}}}),
			},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "redirect-http"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 80, "allow"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 22, "allow"},
				{"default/web", Ingress, "other/client", ProtoTCP, 80, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				for _, rs := range p.Endpoint("default", "web").Ingress.HTTP {
					for _, r := range rs.Rules {
						if len(r.Remotes) == 0 {
							t.Errorf("rule with every remote: %+v", r)
						}
					}
				}
			},
		},
		{
			name: "wildcard http rule plus l3 allow",
			policies: []Policy{
				tpol("default", "http", Rule{EndpointSelector: web, Ingress: []PeerRule{{Ports: httpGet}}}),
				tpol("default", "admin", Rule{EndpointSelector: web, Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{admin}}}}}),
			},
			checks: []flowCheck{
				{"default/web", Ingress, "default/client", ProtoTCP, 80, "redirect-http"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 80, "redirect-http"},
				{"default/web", Ingress, "default/admin", ProtoTCP, 22, "allow"},
				{"default/web", Ingress, "default/client", ProtoTCP, 22, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				adm := p.Endpoint("default", "admin").Identity
				rs := p.Endpoint("default", "web").Ingress.HTTP
				if len(rs) != 1 || len(rs[0].Rules) != 2 {
					t.Fatalf("rule sets = %+v", rs)
				}
				var any, all HTTPAllow
				for _, r := range rs[0].Rules {
					if r.Rule == nil {
						all = r
					} else {
						any = r
					}
				}
				if len(any.Remotes) != 0 || any.Rule == nil {
					t.Errorf("GET rule = %+v, want every remote", any)
				}
				if !slices.Equal(all.Remotes, []ID{adm}) {
					t.Errorf("allow-all rule remotes = %v, want [%d]", all.Remotes, adm)
				}
			},
		},
		{
			name: "allow host ingress option",
			opts: Options{AllowHostIngress: true},
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "ip:192.168.0.10", ProtoTCP, 8080, "allow"},
				{"default/web", Ingress, "ip:1.1.1.1", ProtoTCP, 8080, "drop"},
			},
		},
		{
			name: "host ingress not allowed by default",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web,
				Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{client}}}}})},
			checks: []flowCheck{
				{"default/web", Ingress, "ip:192.168.0.10", ProtoTCP, 8080, "drop"},
			},
		},
		{
			name: "fqdn and dns",
			policies: []Policy{tpol("default", "p", Rule{EndpointSelector: web, Egress: []PeerRule{
				{Peers: Peers{Endpoints: []Selector{tsel("", "k8s:"+LabelNamespace+"=other")}},
					Ports: []PortRule{{Ports: []PortProtocol{{Proto: ProtoAny, Ports: PortRange{From: 53, To: 53}}}, DNS: []DNSRule{{MatchPattern: "*.example.com"}}}}},
				{Peers: Peers{FQDNs: []FQDNSelector{{MatchName: "API.example.com."}}}, Ports: tports(ProtoTCP, 443)},
			}})},
			checks: []flowCheck{
				{"default/web", Egress, "other/client", ProtoUDP, 53, "redirect-dns"},
				{"default/web", Egress, "other/client", ProtoTCP, 53, "redirect-dns"},
				{"default/web", Egress, "ip:1.1.1.1", ProtoTCP, 443, "drop"},
			},
			extra: func(t *testing.T, p *Plan) {
				if len(p.FQDNs) != 1 || p.FQDNs[0].Selector.MatchName != "api.example.com" || !p.FQDNs[0].Identity.IsLocal() {
					t.Fatalf("fqdns = %+v", p.FQDNs)
				}
				ep := p.Endpoint("default", "web")
				if got := planDecide(&ep.Egress, p.FQDNs[0].Identity, ProtoTCP, 443); got != "allow" {
					t.Errorf("fqdn identity tcp/443: %s, want allow", got)
				}
				if len(ep.Egress.DNS) != 2 {
					t.Errorf("dns rule sets = %+v, want udp and tcp", ep.Egress.DNS)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(Input{Policies: tt.policies, Endpoints: eps, Namespaces: ns, Node: node, Options: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			checkContract(t, p)
			for _, c := range tt.checks {
				epNS, epName, _ := strings.Cut(c.ep, "/")
				ep := p.Endpoint(epNS, epName)
				if ep == nil {
					t.Fatalf("no endpoint %s", c.ep)
				}
				remote := resolveRemote(t, p, c.remote)
				if got := planDecide(ep.Direction(c.dir), remote, c.proto, c.port); got != c.want {
					t.Errorf("%s %s from/to %s (%d) %s/%d: %s, want %s", c.ep, c.dir, c.remote, remote, c.proto, c.port, got, c.want)
				}
			}
			if tt.extra != nil {
				tt.extra(t, p)
			}
		})
	}
}

func TestCompileDeterministic(t *testing.T) {
	t.Parallel()
	in := benchInput(4, 10, 2)
	var out [2][]byte
	for i := range out {
		in.Allocator = NewMemoryAllocator()
		p, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		out[i], err = json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out[0], out[1]) {
		t.Fatal("two compilations of the same input differ")
	}
}

// TestCompilerRecomputesOnlyAffected checks the incremental contract by
// counting work, not time.
func TestCompilerRecomputesOnlyAffected(t *testing.T) {
	t.Parallel()
	in := benchInput(4, 20, 2)
	c := NewCompiler(in.Options, nil)
	c.SetNode(in.Node)
	for _, ns := range in.Namespaces {
		if err := c.UpsertNamespace(ns); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range in.Policies {
		c.UpsertPolicy(p)
	}
	for _, ep := range in.Endpoints {
		if err := c.UpsertEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	c.Plan()
	tests := []struct {
		name      string
		change    func(t *testing.T)
		maxFull   int
		maxDelta  int
		wantDelta bool
	}{
		{
			name: "label change to a new label set",
			change: func(t *testing.T) {
				ep := tep("ns-1", "app-0-0", "", "app=app-0", "tier=backend", "track=canary")
				if err := c.UpsertEndpoint(ep); err != nil {
					t.Fatal(err)
				}
			},
			// The new identity is computed whole; the apps that allow app-0
			// (three ingress peers, three egress peers) update one remote.
			maxFull: 1, maxDelta: 6, wantDelta: true,
		},
		{
			name: "endpoint joins an existing label set",
			change: func(t *testing.T) {
				if err := c.UpsertEndpoint(tep("ns-1", "app-3-9", "10.200.0.9", "app=app-3", "tier=backend")); err != nil {
					t.Fatal(err)
				}
			},
			maxFull: 0, maxDelta: 0,
		},
		{
			name:    "policy change",
			change:  func(t *testing.T) { c.UpsertPolicy(in.Policies[7]) },
			maxFull: 1, maxDelta: 0,
		},
	}
	for _, tt := range tests { // sequential: each step builds on the last
		t.Run(tt.name, func(t *testing.T) {
			before := c.Stats()
			tt.change(t)
			p := c.Plan()
			after := c.Stats()
			full, delta := after.FullRecomputes-before.FullRecomputes, after.DeltaRecomputes-before.DeltaRecomputes
			if full > tt.maxFull || delta > tt.maxDelta || (tt.wantDelta && delta == 0) {
				t.Errorf("%d full and %d delta recomputations, want at most %d and %d", full, delta, tt.maxFull, tt.maxDelta)
			}
			checkContract(t, p)
		})
	}
}
