package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// diffWorld is the state a random change sequence builds, kept as plain
// values so that a fresh Compile can be run on it.
type diffWorld struct {
	rng        *rand.Rand
	policies   map[policyKey]Policy
	endpoints  map[endpointKey]Endpoint
	namespaces map[string]Namespace
	node       Node
	remotes    map[endpointKey]Endpoint
	remoteNode []netip.Addr
	apiServers []netip.Addr
}

var (
	diffNamespaces = []string{"a", "b", "c"}
	diffApps       = []string{"web", "db", "cache", "api", "dns"}
	diffPrefixes   = []string{"10.9.0.0/16", "10.9.1.0/24", "10.9.1.128/25", "0.0.0.0/0", "192.0.2.0/24", "2001:db8::/32", "10.0.0.0/8"}
	diffFQDNs      = []FQDNSelector{{MatchName: "a.example.com"}, {MatchPattern: "*.example.com"}, {MatchName: "B.example.com."}}
)

func (w *diffWorld) pick(n int) int { return w.rng.IntN(n) }

func (w *diffWorld) selector(ns string) Selector {
	switch w.pick(6) {
	case 0:
		return tsel("", "reserved:host=")
	case 1:
		return tsel("", LabelNamespaceLabelsPrefix+"team="+[]string{"x", "y"}[w.pick(2)])
	case 2:
		return tsel(ns, "app="+diffApps[w.pick(len(diffApps))], "track=canary")
	case 3:
		s := tsel(ns)
		return s
	}
	return tsel(ns, "app="+diffApps[w.pick(len(diffApps))])
}

func (w *diffWorld) peers(ns string, egress bool) Peers {
	var p Peers
	for range 1 + w.pick(2) {
		switch w.pick(6) {
		case 0:
			if w.pick(3) == 0 {
				return Peers{} // wildcard
			}
			p.Entities = append(p.Entities, []Entity{EntityWorld, EntityCluster, EntityHost, EntityRemoteNode, EntityKubeAPIServer, EntityAll}[w.pick(6)])
		case 1:
			cr := CIDRRule{Prefix: netip.MustParsePrefix(diffPrefixes[w.pick(len(diffPrefixes))])}
			for _, ex := range diffPrefixes {
				ep := netip.MustParsePrefix(ex)
				if w.pick(2) == 0 && prefixCovers(cr.Prefix, ep) && ep != cr.Prefix {
					cr.Except = append(cr.Except, ep)
				}
			}
			p.CIDRs = append(p.CIDRs, cr)
		case 2:
			if egress {
				p.FQDNs = append(p.FQDNs, diffFQDNs[w.pick(len(diffFQDNs))])
				continue
			}
			fallthrough
		default:
			p.Endpoints = append(p.Endpoints, w.selector(ns))
		}
	}
	return p
}

func (w *diffWorld) portRules(allowL7 bool) ([]PortRule, []ICMPField) {
	switch w.pick(5) {
	case 0:
		return nil, nil
	case 1:
		return nil, []ICMPField{{Family: "IPv4", Type: uint8(8 + w.pick(2))}}
	}
	var out []PortRule
	for range 1 + w.pick(2) {
		var pr PortRule
		for range 1 + w.pick(2) {
			pp := []PortProtocol{
				{Proto: ProtoTCP, Ports: PortRange{80, 80}},
				{Proto: ProtoTCP, Ports: PortRange{80, 90}},
				{Proto: ProtoTCP, Ports: PortRange{85, 85}},
				{Proto: ProtoAny, Ports: PortRange{53, 53}},
				{Proto: ProtoUDP, Ports: PortRange{53, 53}},
				{Proto: ProtoTCP, Ports: PortRange{}},
				{Proto: ProtoAny, Ports: PortRange{}},
			}[w.pick(7)]
			pr.Ports = append(pr.Ports, pp)
		}
		// HTTP only on the 80-90 ports and DNS only on 53: one port is
		// served by one proxy (validation's job to insist).
		httpOK, dnsOK := true, true
		for _, pp := range pr.Ports {
			httpOK = httpOK && pp.Proto == ProtoTCP && pp.Ports.From >= 80
			dnsOK = dnsOK && pp.Ports.From == 53
		}
		if allowL7 {
			switch w.pick(4) {
			case 0:
				if httpOK {
					pr.HTTP = []HTTPRule{{Method: "GET", Path: "/" + diffApps[w.pick(len(diffApps))]}}
					if w.pick(3) == 0 {
						pr.HTTP = []HTTPRule{}
					}
				}
			case 1:
				if dnsOK {
					pr.DNS = []DNSRule{{MatchPattern: "*.example.com"}}
				}
			}
		}
		out = append(out, pr)
	}
	return out, nil
}

func (w *diffWorld) peerRules(ns string, egress, deny bool) []PeerRule {
	var out []PeerRule
	for range w.pick(3) {
		pr := PeerRule{Peers: w.peers(ns, egress && !deny)}
		pr.Ports, pr.ICMPs = w.portRules(!deny)
		out = append(out, pr)
	}
	return out
}

func (w *diffWorld) policy() Policy {
	ns := ""
	if w.pick(4) != 0 {
		ns = diffNamespaces[w.pick(len(diffNamespaces))]
	}
	var rules []Rule
	for range 1 + w.pick(2) {
		r := Rule{EndpointSelector: w.selector(ns)}
		r.Ingress = w.peerRules(ns, false, false)
		r.Egress = w.peerRules(ns, true, false)
		if w.pick(3) == 0 {
			r.IngressDeny = w.peerRules(ns, false, true)
		}
		if w.pick(3) == 0 {
			r.EgressDeny = w.peerRules(ns, true, true)
		}
		rules = append(rules, r)
	}
	p := tpol(ns, fmt.Sprintf("p%d", w.pick(8)), rules...)
	for i := range p.Rules {
		if w.pick(5) == 0 {
			p.Rules[i].DefaultDenyIngress = false
		}
	}
	return p
}

func (w *diffWorld) endpoint() Endpoint {
	ns := diffNamespaces[w.pick(len(diffNamespaces))]
	labels := []string{"app=" + diffApps[w.pick(len(diffApps))]}
	if w.pick(3) == 0 {
		labels = append(labels, "track=canary")
	}
	ep := tep(ns, fmt.Sprintf("e%d", w.pick(6)), fmt.Sprintf("10.9.%d.%d", w.pick(2), 1+w.pick(20)), labels...)
	if w.pick(4) == 0 {
		ep.IPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", 1+w.pick(20)))
	}
	return ep
}

func (w *diffWorld) input(alloc Allocator, opts Options) Input {
	in := Input{Node: w.node, Allocator: alloc, Options: opts}
	for _, p := range w.policies {
		in.Policies = append(in.Policies, p)
	}
	for _, e := range w.endpoints {
		in.Endpoints = append(in.Endpoints, e)
	}
	for _, n := range w.namespaces {
		in.Namespaces = append(in.Namespaces, n)
	}
	for _, e := range w.remotes {
		in.RemoteEndpoints = append(in.RemoteEndpoints, e)
	}
	in.RemoteNodes = w.remoteNode
	in.APIServers = w.apiServers
	// Map order is random: shuffle-proofness is part of the test.
	return in
}

func TestCompileIncrementalMatchesFull(t *testing.T) {
	t.Parallel()
	seeds := uint64(40)
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			t.Parallel()
			opts := Options{AllowHostIngress: seed%2 == 1}
			w := &diffWorld{
				rng:        rand.New(rand.NewPCG(seed, 7)),
				policies:   map[policyKey]Policy{},
				endpoints:  map[endpointKey]Endpoint{},
				namespaces: map[string]Namespace{},
				remotes:    map[endpointKey]Endpoint{},
			}
			alloc := NewMemoryAllocator()
			c := NewCompiler(opts, alloc)
			var log []string
			var snaps []planSnapshot // every Plan returned, to check none changes later
			for step := range 120 {
				if w.pick(3) == 0 {
					// The rest of the cluster: remote endpoints (whose
					// names and addresses may collide with local ones),
					// remote nodes and the kube-apiserver.
					switch w.pick(5) {
					case 0, 1:
						e := w.endpoint()
						e.Name = "r" + e.Name
						if w.pick(4) == 0 {
							e.Name = e.Name[1:] // same key as a local one
						}
						w.remotes[endpointKey{e.Namespace, e.Name}] = e
						if err := c.UpsertRemoteEndpoint(e); err != nil {
							t.Fatal(err)
						}
						log = append(log, fmt.Sprintf("upsert remote endpoint %s/%s %v %s", e.Namespace, e.Name, e.Labels, e.IPv4))
					case 2:
						for k := range w.remotes {
							delete(w.remotes, k)
							if _, err := c.DeleteRemoteEndpoint(k.Namespace, k.Name); err != nil {
								t.Fatal(err)
							}
							log = append(log, "delete remote endpoint "+k.Namespace+"/"+k.Name)
							break
						}
					case 3:
						w.remoteNode = nil
						for range w.pick(3) {
							w.remoteNode = append(w.remoteNode, netip.MustParseAddr(fmt.Sprintf("10.9.0.%d", 1+w.pick(20))))
						}
						c.SetRemoteNodes(w.remoteNode)
						log = append(log, fmt.Sprintf("set remote nodes %v", w.remoteNode))
					default:
						w.apiServers = nil
						for range w.pick(2) {
							w.apiServers = append(w.apiServers, netip.MustParseAddr(fmt.Sprintf("10.9.1.%d", 1+w.pick(20))))
						}
						c.SetAPIServers(w.apiServers)
						log = append(log, fmt.Sprintf("set apiservers %v", w.apiServers))
					}
				}
				switch op := w.pick(10); {
				case op < 3:
					p := w.policy()
					w.policies[keyOfPolicy(&p)] = p
					c.UpsertPolicy(p)
					log = append(log, "upsert policy "+p.Ref())
				case op == 3:
					for k := range w.policies {
						delete(w.policies, k)
						c.DeletePolicy(k.Kind, k.Namespace, k.Name)
						log = append(log, "delete policy "+k.Name)
						break
					}
				case op < 7:
					e := w.endpoint()
					w.endpoints[endpointKey{e.Namespace, e.Name}] = e
					if err := c.UpsertEndpoint(e); err != nil {
						t.Fatal(err)
					}
					log = append(log, fmt.Sprintf("upsert endpoint %s/%s %v", e.Namespace, e.Name, e.Labels))
				case op == 7:
					for k := range w.endpoints {
						delete(w.endpoints, k)
						if _, err := c.DeleteEndpoint(k.Namespace, k.Name); err != nil {
							t.Fatal(err)
						}
						log = append(log, "delete endpoint "+k.Namespace+"/"+k.Name)
						break
					}
				case op == 8:
					n := Namespace{Name: diffNamespaces[w.pick(len(diffNamespaces))], Labels: map[string]string{"team": []string{"x", "y"}[w.pick(2)]}}
					w.namespaces[n.Name] = n
					if err := c.UpsertNamespace(n); err != nil {
						t.Fatal(err)
					}
					log = append(log, "upsert namespace "+n.Name)
				default:
					w.node = Node{Name: "n", Addresses: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.9.0.%d", 1+w.pick(20)))}}
					c.SetNode(w.node)
					log = append(log, "set node")
				}
				if w.pick(3) != 0 && step != 119 {
					continue // let changes batch up sometimes
				}
				got := c.Plan()
				checkContract(t, got)
				// The full compile shares the local allocator: it finds the
				// prefixes the incremental compiler holds under their
				// (stable) numbers.
				in := w.input(alloc, opts)
				in.LocalAllocator = c.LocalIdentities()
				want, err := Compile(in)
				if err != nil {
					t.Fatal(err)
				}
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(want)
				snaps = append(snaps, planSnapshot{step: fmt.Sprintf("step %d", step), plan: got, json: gj})
				if step%20 == 0 || step == 119 {
					checkAgainstReference(t, w.input(alloc, opts), got)
				}
				if string(gj) != string(wj) {
					gj, _ = json.MarshalIndent(got, "", " ")
					wj, _ = json.MarshalIndent(want, "", " ")
					t.Fatalf("step %d: incremental plan differs from full compile\nchanges:\n  %s\n%s", step, strings.Join(log[max(0, len(log)-8):], "\n  "), firstDiff(string(wj), string(gj)))
				}
			}
			checkSnapshots(t, snaps)
		})
	}
}

// firstDiff shows the first differing lines of two texts.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		if i >= len(wl) || i >= len(gl) || wl[i] != gl[i] {
			lo := max(0, i-15)
			return fmt.Sprintf("full (line %d):\n%s\nincremental:\n%s", i, strings.Join(wl[lo:min(len(wl), i+5)], "\n"), strings.Join(gl[lo:min(len(gl), i+5)], "\n"))
		}
	}
	return "no difference"
}
