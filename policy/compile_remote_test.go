package policy

import (
	"net/netip"
	"testing"
)

func planEndpoint(t *testing.T, p *Plan, ns, name string) *EndpointPlan {
	t.Helper()
	for i := range p.Endpoints {
		if p.Endpoints[i].Namespace == ns && p.Endpoints[i].Name == name {
			return &p.Endpoints[i]
		}
	}
	t.Fatalf("no endpoint %s/%s in the plan", ns, name)
	return nil
}

func ipcacheOf(p *Plan) map[string]ID {
	out := map[string]ID{}
	for _, e := range p.IPCache {
		out[e.Prefix.String()] = e.Identity
	}
	return out
}

// TestRemoteEndpointsAreSelectablePeers: a pod of another node gets the
// identity of its label set (the same as a local pod with those labels),
// its address maps to it, policies select it, and it has no Plan of its own.
func TestRemoteEndpointsAreSelectablePeers(t *testing.T) {
	c := NewCompiler(Options{}, NewMemoryAllocator())
	c.UpsertPolicy(tpol("a", "web", Rule{
		EndpointSelector: tsel("a", "app=web"),
		Ingress:          []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("a", "app=client")}}, Ports: tports(ProtoTCP, 80)}},
	}))
	if err := c.UpsertEndpoint(tep("a", "web", "10.0.0.1", "app=web")); err != nil {
		t.Fatal(err)
	}
	p := c.Plan()
	if n := len(p.Endpoints[0].Ingress.Entries); n != 0 {
		t.Fatalf("positive control: web has %d ingress entries before any client exists, want 0", n)
	}
	if err := c.UpsertRemoteEndpoint(tep("a", "client", "10.0.1.7", "app=client")); err != nil {
		t.Fatal(err)
	}
	p = c.Plan()
	if len(p.Endpoints) != 1 || p.Endpoints[0].Name != "web" {
		t.Fatalf("plan endpoints = %+v, want only the local web", p.Endpoints)
	}
	cid := ipcacheOf(p)["10.0.1.7/32"]
	if cid < IDFirstAllocated {
		t.Fatalf("remote client's address maps to %v, want a label-set identity", cid)
	}
	es := p.Endpoints[0].Ingress.Entries
	if len(es) != 1 || es[0].Identity != cid || es[0].Ports.From != 80 {
		t.Fatalf("web ingress = %+v, want one entry for the remote client's identity %d on port 80", es, cid)
	}
	// A local pod with the same labels shares the number.
	if err := c.UpsertEndpoint(tep("a", "client2", "10.0.0.2", "app=client")); err != nil {
		t.Fatal(err)
	}
	p = c.Plan()
	if got := ipcacheOf(p)["10.0.0.2/32"]; got != cid {
		t.Errorf("local client2 identity %d, want the remote client's %d", got, cid)
	}
	// The remote pod goes: the local one keeps the identity and web's entry.
	if ok, err := c.DeleteRemoteEndpoint("a", "client"); !ok || err != nil {
		t.Fatalf("DeleteRemoteEndpoint = %v, %v", ok, err)
	}
	p = c.Plan()
	if _, ok := ipcacheOf(p)["10.0.1.7/32"]; ok {
		t.Errorf("deleted remote endpoint's address still in the ipcache")
	}
	if es := planEndpoint(t, p, "a", "web").Ingress.Entries; len(es) != 1 || es[0].Identity != cid {
		t.Errorf("web ingress after the remote client went = %+v, want the local client2's entry", es)
	}
	if _, err := c.DeleteEndpoint("a", "client2"); err != nil {
		t.Fatal(err)
	}
	p = c.Plan()
	if es := p.Endpoints[0].Ingress.Entries; len(es) != 0 {
		t.Errorf("web ingress with no client left = %+v, want none", es)
	}
	for _, id := range p.Identities {
		if id.ID == cid {
			t.Errorf("identity %d still listed with no endpoint holding it", cid)
		}
	}
}

// TestRemoteAddressPrecedence: who owns an address shared by several
// sources, and entities for remote nodes and the kube-apiserver.
func TestRemoteAddressPrecedence(t *testing.T) {
	c := NewCompiler(Options{}, NewMemoryAllocator())
	c.UpsertPolicy(tpol("a", "web", Rule{
		EndpointSelector: tsel("a", "app=web"),
		Egress: []PeerRule{{Peers: Peers{Entities: []Entity{EntityKubeAPIServer}}, Ports: tports(ProtoTCP, 6443)},
			{Peers: Peers{Entities: []Entity{EntityRemoteNode}}, Ports: tports(ProtoTCP, 10250)}},
	}))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.UpsertEndpoint(tep("a", "web", "10.0.0.1", "app=web")))
	c.SetNode(Node{Name: "n1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.1")}})
	c.SetRemoteNodes([]netip.Addr{netip.MustParseAddr("192.168.0.2"), netip.MustParseAddr("192.168.0.3"), netip.MustParseAddr("192.168.0.1")})
	c.SetAPIServers([]netip.Addr{netip.MustParseAddr("192.168.0.3"), netip.MustParseAddr("192.168.0.1")})
	must(c.UpsertRemoteEndpoint(tep("b", "hostnet", "192.168.0.2", "app=x")))
	p := c.Plan()
	ipc := ipcacheOf(p)
	remote := ipc["192.168.0.2/32"]
	for pf, want := range map[string]ID{
		"192.168.0.1/32": IDHost,          // host over apiserver and remote-node
		"192.168.0.3/32": IDKubeAPIServer, // apiserver over remote-node
		"10.0.0.1/32":    p.Endpoints[0].Identity,
	} {
		if got := ipc[pf]; got != want {
			t.Errorf("ipcache %s = %v, want %v", pf, got, want)
		}
	}
	if remote < IDFirstAllocated {
		t.Errorf("ipcache 192.168.0.2 = %v, want the remote endpoint's identity (over remote-node)", remote)
	}
	// Without the remote endpoint, the address is a remote node's again.
	if _, err := c.DeleteRemoteEndpoint("b", "hostnet"); err != nil {
		t.Fatal(err)
	}
	p = c.Plan()
	if got := ipcacheOf(p)["192.168.0.2/32"]; got != IDRemoteNode {
		t.Errorf("ipcache 192.168.0.2 after the remote endpoint went = %v, want remote-node", got)
	}
	got := map[ID]uint16{}
	for _, e := range p.Endpoints[0].Egress.Entries {
		got[e.Identity] = e.Ports.From
	}
	if got[IDKubeAPIServer] != 6443 || got[IDRemoteNode] != 10250 {
		t.Errorf("web egress = %v, want kube-apiserver:6443 and remote-node:10250", got)
	}
	// Setting the same set again changes nothing; a smaller set drops.
	c.SetAPIServers(nil)
	p = c.Plan()
	if got := ipcacheOf(p)["192.168.0.3/32"]; got != IDRemoteNode {
		t.Errorf("ipcache 192.168.0.3 without apiservers = %v, want remote-node", got)
	}
}
