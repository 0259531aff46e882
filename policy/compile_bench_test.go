package policy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// benchInput builds a realistic cluster: nss namespaces with apps apps
// each, replicas endpoints per app, and two policies per app (one ingress,
// one egress): each selects its app and allows three peer apps on a few
// ports; every fifth app has HTTP rules, every app may resolve names
// through kube-dns with DNS rules, and every tenth app reaches an external
// CIDR and an FQDN.
func benchInput(nss, apps, replicas int) Input {
	var in Input
	in.Node = Node{Name: "node-1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.1")}}
	in.Namespaces = append(in.Namespaces, Namespace{Name: "kube-system"})
	in.Endpoints = append(in.Endpoints, tep("kube-system", "coredns", "10.255.0.10", "k8s-app=kube-dns"))
	kubeDNS := tsel("kube-system", "k8s-app=kube-dns")
	ip := 0
	for n := range nss {
		ns := fmt.Sprintf("ns-%d", n)
		in.Namespaces = append(in.Namespaces, Namespace{Name: ns, Labels: map[string]string{"team": fmt.Sprintf("team-%d", n%3)}})
		for a := range apps {
			app := fmt.Sprintf("app-%d", a)
			for r := range replicas {
				ip++
				addr := netip.AddrFrom4([4]byte{10, byte(ip >> 16), byte(ip >> 8), byte(ip)})
				in.Endpoints = append(in.Endpoints, tep(ns, fmt.Sprintf("%s-%d", app, r), addr.String(), "app="+app, "tier=backend"))
			}
			self := tsel(ns, "app="+app)
			var peers []Selector
			for k := 1; k <= 3; k++ {
				peers = append(peers, tsel(ns, fmt.Sprintf("app=app-%d", (a+k*7)%apps)))
			}
			ports := []PortRule{{Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 8080, To: 8080}}, {Proto: ProtoTCP, Ports: PortRange{From: 9090, To: 9100}}}}}
			if a%5 == 0 {
				ports = []PortRule{{
					Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 8080, To: 8080}}},
					HTTP:  []HTTPRule{{Method: "GET", Path: "/api/v1/.*"}, {Method: "POST", Path: "/api/v1/orders", Headers: []HeaderMatch{{Name: "X-Tenant"}}}},
				}}
			}
			in.Policies = append(in.Policies, tpol(ns, app+"-ingress", Rule{EndpointSelector: self,
				Ingress: []PeerRule{
					{Peers: Peers{Endpoints: peers}, Ports: ports},
					{Peers: Peers{Endpoints: []Selector{tsel("", "k8s:"+LabelNamespace+"=monitoring")}}, Ports: tports(ProtoTCP, 9102)},
				}}))
			egress := []PeerRule{
				{Peers: Peers{Endpoints: peers}, Ports: tports(ProtoTCP, 8080)},
				{Peers: Peers{Endpoints: []Selector{kubeDNS}}, Ports: []PortRule{{
					Ports: []PortProtocol{{Proto: ProtoAny, Ports: PortRange{From: 53, To: 53}}},
					DNS:   []DNSRule{{MatchPattern: "*." + ns + ".svc.cluster.local"}, {MatchName: "api.example.com"}},
				}}},
			}
			if a%10 == 0 {
				egress = append(egress,
					PeerRule{Peers: Peers{CIDRs: []CIDRRule{{Prefix: netip.MustParsePrefix(fmt.Sprintf("203.0.%d.0/24", a)), Except: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("203.0.%d.128/25", a))}}}}, Ports: tports(ProtoTCP, 443)},
					PeerRule{Peers: Peers{FQDNs: []FQDNSelector{{MatchName: "api.example.com"}}}, Ports: tports(ProtoTCP, 443)},
				)
			}
			in.Policies = append(in.Policies, tpol(ns, app+"-egress", Rule{EndpointSelector: self, Egress: egress}))
		}
	}
	return in
}

func BenchmarkCompileFull(b *testing.B) {
	in := benchInput(10, 50, 2) // 1,000 policies, 1,001 endpoints
	b.ReportAllocs()
	for b.Loop() {
		in.Allocator = NewMemoryAllocator()
		if _, err := Compile(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(in.Policies)), "policies")
	b.ReportMetric(float64(len(in.Endpoints)), "endpoints")
}

func BenchmarkIncrementalLabelChange(b *testing.B) {
	in := benchInput(10, 50, 2)
	// The full compilation this is compared with, measured in the same run.
	const fullRuns = 3
	start := time.Now()
	for range fullRuns {
		in.Allocator = NewMemoryAllocator()
		if _, err := Compile(in); err != nil {
			b.Fatal(err)
		}
	}
	full := time.Since(start) / fullRuns

	c := NewCompiler(in.Options, NewMemoryAllocator())
	c.SetNode(in.Node)
	for _, ns := range in.Namespaces {
		if err := c.UpsertNamespace(ns); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range in.Policies {
		c.UpsertPolicy(p)
	}
	for _, ep := range in.Endpoints {
		if err := c.UpsertEndpoint(ep); err != nil {
			b.Fatal(err)
		}
	}
	c.Plan()
	// One endpoint of ns-3/app-0 (whose app has HTTP rules and is a peer of
	// three other apps) flips a label: a new identity appears, then goes.
	ep := tep("ns-3", "app-0-0", "", "app=app-0", "tier=backend")
	for _, e := range in.Endpoints {
		if e.Namespace == ep.Namespace && e.Name == ep.Name {
			ep.IPv4 = e.IPv4
		}
	}
	b.ReportAllocs()
	i := 0
	// assembly is the time spent copying the result into a fresh Plan
	// (O(endpoints)), as opposed to recomputing what changed.
	var assembly time.Duration
	for b.Loop() {
		i++
		if i%2 == 1 {
			ep.Labels["track"] = "canary"
		} else {
			delete(ep.Labels, "track")
		}
		if err := c.UpsertEndpoint(ep); err != nil {
			b.Fatal(err)
		}
		c.sync()
		t0 := time.Now()
		c.Plan()
		assembly += time.Since(t0)
	}
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(full.Microseconds()), "full-µs")
	b.ReportMetric(100*float64(per)/float64(full), "%-of-full")
	b.ReportMetric(100*float64(per-assembly/time.Duration(b.N))/float64(full), "recompute-%-of-full")
}
