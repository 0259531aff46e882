package l7proxy_test

import (
	"testing"

	"github.com/moatnet/moat/internal/httpnorm"
)

// TestUpstreamRequestTarget: the upstream receives exactly the normalised
// request target: the path with its percent-escapes (never escaped again),
// then the client's query unchanged.
func TestUpstreamRequestTarget(t *testing.T) {
	e := newEnv(t)
	e.allowOnly("GET", "/files/.*")
	tests := []struct {
		name   string
		target string
		want   string // target the upstream receives
	}{
		{"escaped space", "/files/my%20doc", "/files/my%20doc"},
		{"escaped question mark", "/files/what%3Fnot", "/files/what%3Fnot"},
		{"escaped utf-8", "/files/caf%C3%A9", "/files/caf%C3%A9"},
		{"escapes upper-cased", "/files/caf%c3%a9", "/files/caf%C3%A9"},
		{"unreserved decoded", "/files/%61bc", "/files/abc"},
		{"escaped percent", "/files/100%25", "/files/100%25"},
		{"query unchanged", "/files/my%20doc?q=a%20b&x=%2F", "/files/my%20doc?q=a%20b&x=%2F"},
		{"sub-delims kept", "/files/a;b=c,d!e$f'(g)*+h:@", "/files/a;b=c,d!e$f'(g)*+h:@"},
		{"raw utf-8 escaped", "/files/caf\xc3\xa9", "/files/caf%C3%A9"},
		{"dot segments", "/files/x/../my%20doc", "/files/my%20doc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.raw(tiefighterIP, "GET "+tt.target+" HTTP/1.1\r\nHost: deathstar\r\n\r\n")
			if resp.StatusCode != 200 || body != "GET "+tt.want {
				t.Errorf("got %d %q, want 200 %q", resp.StatusCode, body, "GET "+tt.want)
			}
		})
	}
	t.Run("escaped slash redirect followed (envoy paths)", func(t *testing.T) {
		e.ecfg.PathMode = httpnorm.ModeEnvoy
		e.allowOnly("GET", "/files/.*")
		resp, _ := e.raw(tiefighterIP, "GET /files%2Fmy%20doc?v=1%202 HTTP/1.1\r\nHost: deathstar\r\n\r\n")
		loc := resp.Header.Get("Location")
		if resp.StatusCode != 307 || loc != "/files/my%20doc?v=1%202" {
			t.Fatalf("got %d Location %q, want 307 to /files/my%%20doc?v=1%%202", resp.StatusCode, loc)
		}
		resp, body := e.raw(tiefighterIP, "GET "+loc+" HTTP/1.1\r\nHost: deathstar\r\n\r\n")
		if want := "GET /files/my%20doc?v=1%202"; resp.StatusCode != 200 || body != want {
			t.Errorf("follow-up: got %d %q, want 200 %q", resp.StatusCode, body, want)
		}
	})
}
