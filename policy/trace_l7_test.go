package policy

import (
	"strings"
	"testing"
)

// TestTraceAnswersLikeTheProxy: trace gives the status the proxy sends for
// requests its connection manager answers itself (path normalisation in
// both path modes, header names, Host), not the RBAC decision the request
// would get if it went through.
func TestTraceAnswersLikeTheProxy(t *testing.T) {
	t.Parallel()
	plan, err := Compile(starWarsInput())
	if err != nil {
		t.Fatal(err)
	}
	ep := func(name string) TracePeer { return TracePeer{Namespace: "default", Name: name} }
	tests := []struct {
		name     string
		http     TraceHTTP
		status   int
		location string
		allowed  bool
	}{
		{"escaped slash, strict", TraceHTTP{Method: "POST", Path: "/v1%2Frequest-landing"}, 400, "", false},
		{"escaped slash, envoy: redirect", TraceHTTP{Method: "POST", Path: "/v1%2Frequest-landing?a=1", PathMode: "envoy"}, 307, "/v1/request-landing?a=1", false},
		{"dot-dot with params, strict", TraceHTTP{Method: "POST", Path: "/v1/x/..;/request-landing"}, 400, "", false},
		{"dot-dot with params, envoy: a plain segment", TraceHTTP{Method: "POST", Path: "/v1/x/..;/request-landing", PathMode: "envoy"}, 403, "", false},
		{"empty segment before dot-dot, strict", TraceHTTP{Method: "POST", Path: "/v1/request-landing//../request-landing"}, 400, "", false},
		{"encoded dot-dot, strict", TraceHTTP{Method: "POST", Path: "/v1/x/%2e%2e/request-landing"}, 400, "", false},
		{"encoded dot-dot, envoy", TraceHTTP{Method: "POST", Path: "/v1/x/%2e%2e/request-landing", PathMode: "envoy"}, 0, "", true},
		{"underscore header", TraceHTTP{Method: "POST", Path: "/v1/request-landing", Headers: map[string]string{"X_Token": "a"}}, 400, "", false},
		{"host with user info, strict", TraceHTTP{Method: "POST", Path: "/v1/request-landing", Host: "a@deathstar"}, 400, "", false},
		{"upgrade", TraceHTTP{Method: "POST", Path: "/v1/request-landing", Headers: map[string]string{"Upgrade": "websocket", "Connection": "upgrade"}}, 403, "", false},
		{"h2c upgrade is ignored", TraceHTTP{Method: "POST", Path: "/v1/request-landing", Headers: map[string]string{"Upgrade": "h2c", "Connection": "upgrade"}}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := tt.http
			res := Trace(plan, TraceRequest{From: ep("tiefighter"), To: ep("deathstar"), Proto: ProtoTCP, Port: 80, HTTP: &h})
			if len(res.Steps) == 0 || res.Steps[len(res.Steps)-1].HTTP == nil {
				t.Fatalf("no HTTP step:\n%s", res)
			}
			got := res.Steps[len(res.Steps)-1].HTTP
			if got.Status != tt.status || got.Location != tt.location || res.Allowed() != tt.allowed {
				t.Errorf("status %d location %q allowed %v, want %d %q %v\n%s", got.Status, got.Location, res.Allowed(), tt.status, tt.location, tt.allowed, res)
			}
		})
	}
	t.Run("bad path mode", func(t *testing.T) {
		res := Trace(plan, TraceRequest{From: ep("tiefighter"), To: ep("deathstar"), Proto: ProtoTCP, Port: 80,
			HTTP: &TraceHTTP{Method: "POST", Path: "/v1/request-landing", PathMode: "loose"}})
		if res.Allowed() || len(res.Steps) == 0 {
			t.Fatalf("allowed with a bad path mode:\n%s", res)
		}
		if r := res.Steps[len(res.Steps)-1].Reason; !strings.Contains(r, `parse path mode "loose"`) {
			t.Errorf("reason %q, want the bad mode named", r)
		}
	})
}
