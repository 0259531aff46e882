package policy

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// starWarsInput is Cilium's Star Wars demo as Go values: only org=empire may
// land (POST /v1/request-landing) on the deathstar's port 80.
func starWarsInput() Input {
	deathstar := tsel("default", "org=empire", "class=deathstar")
	return Input{
		Namespaces: []Namespace{{Name: "default"}, {Name: "kube-system"}},
		Endpoints: []Endpoint{
			tep("default", "deathstar", "10.0.0.10", "org=empire", "class=deathstar"),
			tep("default", "tiefighter", "10.0.0.11", "org=empire", "class=tiefighter"),
			tep("default", "xwing", "10.0.0.12", "org=alliance", "class=xwing"),
			tep("kube-system", "coredns", "10.0.0.53", "k8s-app=kube-dns"),
		},
		Node: Node{Addresses: []netip.Addr{netip.MustParseAddr("192.168.1.1")}},
		Policies: []Policy{
			tpol("default", "rule1", Rule{EndpointSelector: deathstar, Ingress: []PeerRule{{
				Peers: Peers{Endpoints: []Selector{tsel("default", "org=empire")}},
				Ports: []PortRule{{Ports: []PortProtocol{{Proto: ProtoTCP, Ports: PortRange{From: 80, To: 80}}},
					HTTP: []HTTPRule{
						{Method: "POST", Path: "/v1/request-landing"},
						{Method: "GET", Path: "/v1/status", Host: `deathstar\.default\.svc`, Headers: []HeaderMatch{{Name: "X-Token", Value: "abc", HasValue: true}, {Name: "X-Trace"}}},
					}}},
			}}}),
			tpol("default", "dns", Rule{EndpointSelector: tsel("default", "class=tiefighter"), Egress: []PeerRule{
				{Peers: Peers{Endpoints: []Selector{tsel("kube-system", "k8s-app=kube-dns")}},
					Ports: []PortRule{{Ports: []PortProtocol{{Proto: ProtoAny, Ports: PortRange{From: 53, To: 53}}}, DNS: []DNSRule{{MatchPattern: "*.cilium.io"}, {MatchName: "deathstar.default.svc.cluster.local"}}}}},
				{Peers: Peers{Endpoints: []Selector{tsel("default", "class=deathstar")}}, Ports: tports(ProtoTCP, 80)},
			}}),
		},
	}
}

func TestTrace(t *testing.T) {
	t.Parallel()
	plan, err := Compile(starWarsInput())
	if err != nil {
		t.Fatal(err)
	}
	ep := func(ns, name string) TracePeer { return TracePeer{Namespace: ns, Name: name} }
	httpReq := func(method, path string) *TraceHTTP { return &TraceHTTP{Method: method, Path: path} }
	tests := []struct {
		name      string
		req       TraceRequest
		want      string
		steps     int
		reason    string // substring of the last step's reason
		status    int
		matchFrom string
	}{
		{"tiefighter lands", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/request-landing")},
			TraceAllowed, 2, "HTTP request allowed", 0, "CiliumNetworkPolicy default/rule1"},
		{"tiefighter exhaust port", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("PUT", "/v1/exhaust-port")},
			TraceDenied, 2, "403 Access denied", 403, ""},
		{"xwing dropped at l4", TraceRequest{From: ep("default", "xwing"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/request-landing")},
			TraceDenied, 2, "default deny", 0, ""},
		{"get is not post", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("GET", "/v1/request-landing")},
			TraceDenied, 2, "403", 403, ""},
		{"whole path must match", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/request-landing/x")},
			TraceDenied, 2, "403", 403, ""},
		{"dot segments normalised", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/./x/../request-landing?q=1")},
			TraceAllowed, 2, "allowed", 0, "CiliumNetworkPolicy default/rule1"},
		{"dot-dot cannot reach exhaust port", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/request-landing/../exhaust-port")},
			TraceDenied, 2, "403", 403, ""},
		{"bad target rejected", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80, HTTP: httpReq("POST", "/v1/request-landing#x")},
			TraceDenied, 2, "rejected", 400, ""},
		{"host case and port ignored, headers match", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80,
			HTTP: &TraceHTTP{Method: "GET", Path: "/v1/status", Host: "DeathStar.default.svc:80", Headers: map[string]string{"x-token": "abc", "X-Trace": ""}}},
			TraceAllowed, 2, "allowed", 0, "CiliumNetworkPolicy default/rule1"},
		{"header value must be exact", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80,
			HTTP: &TraceHTTP{Method: "GET", Path: "/v1/status", Host: "deathstar.default.svc", Headers: map[string]string{"X-Token": "abcd", "X-Trace": "1"}}},
			TraceDenied, 2, "403", 403, ""},
		{"header must be present", TraceRequest{From: ep("default", "tiefighter"), To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80,
			HTTP: &TraceHTTP{Method: "GET", Path: "/v1/status", Host: "deathstar.default.svc", Headers: map[string]string{"X-Token": "abc"}}},
			TraceDenied, 2, "403", 403, ""},
		{"world by address", TraceRequest{From: TracePeer{IP: netip.MustParseAddr("1.2.3.4")}, To: ep("default", "deathstar"), Proto: ProtoTCP, Port: 80},
			TraceDenied, 1, "default deny", 0, ""},
		{"endpoint by address", TraceRequest{From: TracePeer{IP: netip.MustParseAddr("10.0.0.11")}, To: TracePeer{IP: netip.MustParseAddr("10.0.0.10")}, Proto: ProtoTCP, Port: 80},
			TraceAllowed, 2, "only the connection is allowed", 0, ""},
		{"dns allowed by the rules", TraceRequest{From: ep("default", "tiefighter"), To: ep("kube-system", "coredns"), Proto: ProtoUDP, Port: 53, DNSQuery: "www.cilium.io."},
			TraceAllowed, 2, "DNS query allowed by CiliumNetworkPolicy default/dns (dns.yaml doc 1) spec.egress[0]", 0, ""},
		{"dns refused", TraceRequest{From: ep("default", "tiefighter"), To: ep("kube-system", "coredns"), Proto: ProtoUDP, Port: 53, DNSQuery: "cilium.io"},
			TraceDenied, 1, "REFUSED", 0, ""},
		{"egress drop stops the trace", TraceRequest{From: ep("default", "tiefighter"), To: TracePeer{IP: netip.MustParseAddr("8.8.8.8")}, Proto: ProtoTCP, Port: 443},
			TraceDenied, 1, "default deny", 0, ""},
		{"unenforced egress", TraceRequest{From: ep("default", "xwing"), To: TracePeer{IP: netip.MustParseAddr("8.8.8.8")}, Proto: ProtoTCP, Port: 443},
			TraceAllowed, 1, "not enforced", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Trace(plan, tt.req)
			if res.Verdict != tt.want || len(res.Steps) != tt.steps {
				t.Fatalf("verdict %s with %d steps, want %s with %d\n%s", res.Verdict, len(res.Steps), tt.want, tt.steps, res)
			}
			last := res.Steps[len(res.Steps)-1]
			var reasons []string
			for _, s := range res.Steps {
				reasons = append(reasons, s.Reason)
			}
			if r := strings.Join(reasons, " | "); !strings.Contains(r, tt.reason) {
				t.Errorf("reasons %q, want them to contain %q", r, tt.reason)
			}
			if tt.status != 0 && (last.HTTP == nil || last.HTTP.Status != tt.status) {
				t.Errorf("http decision %+v, want status %d", last.HTTP, tt.status)
			}
			if tt.matchFrom != "" && (last.HTTP == nil || last.HTTP.Matched == nil || last.HTTP.Matched.From.Policy != tt.matchFrom) {
				t.Errorf("http decision %+v, want a match from %s", last.HTTP, tt.matchFrom)
			}
			if tt.status == 403 && last.HTTP.Body != "Access denied" {
				t.Errorf("403 body %q", last.HTTP.Body)
			}
			if _, err := json.Marshal(res); err != nil {
				t.Errorf("marshal result: %v", err)
			}
			if s := res.String(); !strings.Contains(s, res.Verdict) {
				t.Errorf("String() lacks the verdict: %s", s)
			}
		})
	}
}

func TestTraceErrors(t *testing.T) {
	t.Parallel()
	plan, err := Compile(starWarsInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		req  TraceRequest
	}{
		{"unknown endpoint", TraceRequest{From: TracePeer{Namespace: "default", Name: "nope"}, To: TracePeer{IP: netip.MustParseAddr("1.1.1.1")}}},
		{"empty peer", TraceRequest{From: TracePeer{IP: netip.MustParseAddr("1.1.1.1")}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Trace(plan, tt.req)
			if res.Allowed() || res.Error == "" {
				t.Errorf("got %+v, want a denied result with an error", res)
			}
		})
	}
}
