package l7proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/httpnorm"
)

// TestLocalRepliesAreNotForwarded: a request the proxy answers itself
// (403, 400, a redirect) is recorded as answered by the proxy, never as
// FORWARDED; a forwarded one is FORWARDED, and its upstream leg can be
// traced back to the client through the access log.
func TestLocalRepliesAreNotForwarded(t *testing.T) {
	e := newEnv(t)
	e.setPlan(corpusPlan(e.upstream.Port()))
	e.waitACK()
	tests := []struct {
		name, target string
		envoyPaths   bool
		status       int
		verdict      flow.Verdict
		reason       flow.DropReason
	}{
		{"forwarded", "/public/fwd", false, 200, flow.Forwarded, ""},
		{"policy denial", "/admin-denied", false, 403, flow.Dropped, flow.DropPolicyDenied},
		{"ambiguous path", "/public/..;/admin-ambiguous", false, 400, flow.Dropped, flow.DropInvalidPacket},
		{"escaped slash rejected", "/public%2Fadmin-escaped", false, 400, flow.Dropped, flow.DropInvalidPacket},
		{"escaped slash redirected", "/public%2Fredirected", true, 307, flow.Redirected, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if want := map[bool]httpnorm.Mode{false: httpnorm.ModeStrict, true: httpnorm.ModeEnvoy}[tt.envoyPaths]; e.ecfg.PathMode != want {
				e.ecfg.PathMode = want
				e.setPlan(corpusPlan(e.upstream.Port()))
				e.waitACK()
			}
			before := e.seen.count()
			c := e.dial(tiefighterIP)
			if _, err := io.WriteString(c, "GET "+tt.target+" HTTP/1.1\r\nHost: deathstar\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			marker := strings.TrimPrefix(tt.target, "/public")
			marker = marker[strings.LastIndexAny(marker, "/F")+1:]
			var req flow.Flow
			e.flows.waitFor(t, "flow of "+tt.target, func(fs []flow.Flow) bool {
				for _, f := range fs {
					if f.L7 != nil && f.L7.Type == flow.L7Request && strings.Contains(f.L7.HTTP.URL, marker) {
						req = f
						return true
					}
				}
				return false
			})
			if req.Verdict != tt.verdict || req.DropReason != tt.reason {
				t.Errorf("request flow verdict %v reason %q, want %v %q", req.Verdict, req.DropReason, tt.verdict, tt.reason)
			}
			if tt.verdict != flow.Forwarded {
				return
			}
			seen := e.seen.since(before)
			if len(seen) != 1 {
				t.Fatalf("upstream saw %d requests, want 1", len(seen))
			}
			leg := netip.MustParseAddrPort(seen[0].remote)
			client, ok := e.flows.als.ClientOf(leg)
			if want := netip.MustParseAddrPort(c.LocalAddr().String()); !ok || client != want {
				t.Errorf("ClientOf(%s) = %v, %v; want the client %s", leg, client, ok, want)
			}
		})
	}
}
