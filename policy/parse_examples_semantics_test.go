package policy

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestStarWarsExample checks what the Star Wars example means: the
// deathstar (only) is selected, empire ships are the only peers, and the
// only HTTP request allowed is POST /v1/request-landing on TCP 80.
func TestStarWarsExample(t *testing.T) {
	dir := filepath.Join("..", "examples", "starwars")
	pols, err := ParseFiles(filepath.Join(dir, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	eps, err := LoadEndpointsFile(filepath.Join(dir, "endpoints.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := pols[0].Rules[0]
	if !r.DefaultDenyIngress || r.DefaultDenyEgress {
		t.Errorf("default deny = %v/%v, want ingress only", r.DefaultDenyIngress, r.DefaultDenyEgress)
	}
	want := map[string]struct{ selected, peer bool }{
		"deathstar":  {selected: true, peer: true},
		"tiefighter": {selected: false, peer: true},
		"xwing":      {selected: false, peer: false},
	}
	for _, ep := range eps.Endpoints {
		t.Run(ep.Name, func(t *testing.T) {
			ls := EndpointLabels(ep, eps.NamespaceOf(ep.Namespace))
			w := want[ep.Name]
			if got := r.EndpointSelector.Matches(ls); got != w.selected {
				t.Errorf("selected = %v, want %v", got, w.selected)
			}
			if got := r.Ingress[0].Peers.Endpoints[0].Matches(ls); got != w.peer {
				t.Errorf("peer = %v, want %v", got, w.peer)
			}
		})
	}
	pr := r.Ingress[0].Ports[0]
	if want := []PortProtocol{{Ports: PortRange{From: 80, To: 80}, Proto: ProtoTCP}}; !reflect.DeepEqual(pr.Ports, want) {
		t.Errorf("ports = %v, want %v", pr.Ports, want)
	}
	if want := []HTTPRule{{Method: "POST", Path: "/v1/request-landing", FieldPath: "spec.ingress[0].toPorts[0].rules.http[0]"}}; !reflect.DeepEqual(pr.HTTP, want) {
		t.Errorf("http = %+v, want %+v", pr.HTTP, want)
	}
}

// TestNamespaceSelectorExample checks the k8s-allow-from-namespace example
// against its endpoints: only the frontend namespace's pod is a peer.
func TestNamespaceSelectorExample(t *testing.T) {
	dir := filepath.Join("..", "examples", "k8s-allow-from-namespace")
	pols, err := ParseFiles(filepath.Join(dir, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	eps, err := LoadEndpointsFile(filepath.Join(dir, "endpoints.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := pols[0].Rules[0]
	tests := map[string]struct{ selected, peer bool }{
		"api":   {selected: true},
		"ui":    {peer: true},
		"debug": {},
	}
	for _, ep := range eps.Endpoints {
		t.Run(ep.Name, func(t *testing.T) {
			ls := EndpointLabels(ep, eps.NamespaceOf(ep.Namespace))
			w := tests[ep.Name]
			if got := r.EndpointSelector.Matches(ls); got != w.selected {
				t.Errorf("selected = %v, want %v", got, w.selected)
			}
			if got := r.Ingress[0].Peers.Endpoints[0].Matches(ls); got != w.peer {
				t.Errorf("peer = %v, want %v", got, w.peer)
			}
		})
	}
}
