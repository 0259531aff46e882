package policy

import (
	"encoding/json"
	"net/netip"
	"testing"
)

// planSnapshot is a Plan and its JSON at the time it was returned.
type planSnapshot struct {
	step string
	plan *Plan
	json []byte
}

func snapshotPlan(t *testing.T, step string, p *Plan) planSnapshot {
	t.Helper()
	j, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("marshal plan: %v", err)
	}
	return planSnapshot{step: step, plan: p, json: j}
}

// checkSnapshots fails when a Plan changed after it was returned.
func checkSnapshots(t *testing.T, snaps []planSnapshot) {
	t.Helper()
	for _, s := range snaps {
		j, err := json.Marshal(s.plan)
		if err != nil {
			t.Fatalf("marshal plan: %v", err)
		}
		if string(j) != string(s.json) {
			t.Fatalf("the Plan returned after %q changed later\n%s", s.step, firstDiff(string(s.json), string(j)))
		}
	}
}

// planTestCompiler is a small world: two namespaces, an app each with a
// policy that allows the other app, a CIDR and an FQDN.
func planTestCompiler(t *testing.T) *Compiler {
	t.Helper()
	c := NewCompiler(Options{}, nil)
	c.SetNode(Node{Name: "n", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.1")}})
	for _, ns := range []string{"a", "b"} {
		if err := c.UpsertNamespace(Namespace{Name: ns}); err != nil {
			t.Fatal(err)
		}
	}
	c.UpsertPolicy(tpol("a", "web", Rule{EndpointSelector: tsel("a", "app=web"),
		Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("", "app=db")}}, Ports: tports(ProtoTCP, 80)}},
		Egress: []PeerRule{
			{Peers: Peers{CIDRs: []CIDRRule{{Prefix: netip.MustParsePrefix("203.0.113.0/24")}}}, Ports: tports(ProtoTCP, 443)},
			{Peers: Peers{FQDNs: []FQDNSelector{{MatchName: "api.example.com"}}}, Ports: tports(ProtoTCP, 443)},
		}}))
	c.UpsertPolicy(tpol("b", "db", Rule{EndpointSelector: tsel("b", "app=db"),
		Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("", "app=web")}}, Ports: tports(ProtoTCP, 5432)}}}))
	for _, ep := range []Endpoint{
		tep("a", "web-0", "10.0.0.1", "app=web"),
		tep("a", "web-1", "10.0.0.2", "app=web"),
		tep("b", "db-0", "10.0.1.1", "app=db"),
	} {
		if err := c.UpsertEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestPlanStaysUnchangedAfterLaterUpdates(t *testing.T) {
	t.Parallel()
	c := planTestCompiler(t)
	snaps := []planSnapshot{snapshotPlan(t, "initial", c.Plan())}
	// Each step must change the Plan (so the snapshots are worth checking),
	// and no earlier Plan may change with it.
	tests := []struct {
		name   string
		change func(t *testing.T)
	}{
		{
			name: "label change to a new label set",
			change: func(t *testing.T) {
				if err := c.UpsertEndpoint(tep("a", "web-0", "10.0.0.1", "app=web", "track=canary")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "label change back",
			change: func(t *testing.T) {
				if err := c.UpsertEndpoint(tep("a", "web-0", "10.0.0.1", "app=web")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "address change",
			change: func(t *testing.T) {
				if err := c.UpsertEndpoint(tep("a", "web-1", "10.0.0.3", "app=web")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "policy change keeps identities and ipcache",
			change: func(t *testing.T) {
				c.UpsertPolicy(tpol("b", "db", Rule{EndpointSelector: tsel("b", "app=db"),
					Ingress: []PeerRule{{Peers: Peers{Endpoints: []Selector{tsel("", "app=web")}}, Ports: tports(ProtoTCP, 5433)}}}))
			},
		},
		{
			name: "new CIDR and FQDN",
			change: func(t *testing.T) {
				c.UpsertPolicy(tpol("b", "db-out", Rule{EndpointSelector: tsel("b", "app=db"),
					Egress: []PeerRule{
						{Peers: Peers{CIDRs: []CIDRRule{{Prefix: netip.MustParsePrefix("198.51.100.0/24")}}}, Ports: tports(ProtoTCP, 443)},
						{Peers: Peers{FQDNs: []FQDNSelector{{MatchPattern: "*.example.org"}}}, Ports: tports(ProtoTCP, 443)},
					}}))
			},
		},
		{
			name: "endpoint added",
			change: func(t *testing.T) {
				if err := c.UpsertEndpoint(tep("b", "db-1", "10.0.1.2", "app=db")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "endpoint deleted",
			change: func(t *testing.T) {
				if _, err := c.DeleteEndpoint("a", "web-1"); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "node address change",
			change: func(t *testing.T) {
				c.SetNode(Node{Name: "n", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.2")}})
			},
		},
	}
	for _, tt := range tests { // sequential: each step builds on the last
		t.Run(tt.name, func(t *testing.T) {
			prev := snaps[len(snaps)-1]
			tt.change(t)
			p := c.Plan()
			s := snapshotPlan(t, tt.name, p)
			if string(s.json) == string(prev.json) {
				t.Fatalf("the change left the Plan as it was")
			}
			checkContract(t, p)
			snaps = append(snaps, s)
			checkSnapshots(t, snaps)
		})
	}
}
