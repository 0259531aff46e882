package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoOutcomeCheck: `make demo` fails unless the documented Star Wars
// outcome happened (the allowed request answered by the server, the PUT
// denied by the proxy with 403, the xwing dropped in the kernel), and says
// which part went wrong.
func TestDemoOutcomeCheck(t *testing.T) {
	script := filepath.Join("..", "scripts", "demo.sh")
	cases := []struct {
		name          string
		post, put, xw string
		ok            bool
		wantInMessage string
	}{
		{"documented outcome", "501", "403", "000", true, ""},
		{"server answers 200", "200", "403", "000", true, ""},
		{"everything failed", "000", "000", "000", false, "tiefighter POST /v1/request-landing got no connection"},
		{"allowed request denied by the proxy", "403", "403", "000", false, "want an answer from the server"},
		{"exhaust port reached", "501", "501", "000", false, "tiefighter PUT /v1/exhaust-port got 501; want 403"},
		{"xwing got through", "501", "403", "501", false, "xwing POST /v1/request-landing got 501"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.CommandContext(t.Context(), "bash", script, "--check-outcome", tc.post, tc.put, tc.xw).CombinedOutput()
			if tc.ok != (err == nil) {
				t.Fatalf("exit error %v, want ok=%v; output %q", err, tc.ok, out)
			}
			if !strings.Contains(string(out), tc.wantInMessage) {
				t.Fatalf("output %q lacks %q", out, tc.wantInMessage)
			}
		})
	}
}

// TestDemoDNSOutcomeCheck: `make demo EXAMPLE=examples/dns-fqdns` fails
// unless the documented DNS outcome happened, and says which part went
// wrong.
func TestDemoDNSOutcomeCheck(t *testing.T) {
	script := filepath.Join("..", "scripts", "demo.sh")
	cases := []struct {
		name                      string
		allowed, refused          string
		code80, code81, codeNever string
		ok                        bool
		wantInMessage             string
	}{
		{"documented outcome", "NOERROR 198.19.0.10", "REFUSED", "200", "000", "000", true, ""},
		{"allowed name refused", "REFUSED", "REFUSED", "000", "000", "000", false, "api.example.com resolved to 'REFUSED'"},
		{"other name answered", "NOERROR 198.19.0.10", "NOERROR 198.19.0.130", "200", "000", "000", false, "www.example.org got 'NOERROR 198.19.0.130'; want REFUSED"},
		{"first connection dropped", "NOERROR 198.19.0.10", "REFUSED", "000", "000", "000", false, "198.19.0.10:80 (resolved, toFQDNs on port 80) got no connection"},
		{"other port open", "NOERROR 198.19.0.10", "REFUSED", "200", "200", "000", false, "198.19.0.10:81 got 200"},
		{"unresolved address open", "NOERROR 198.19.0.10", "REFUSED", "200", "000", "200", false, "198.19.0.20:80 (never resolved) got 200"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.CommandContext(t.Context(), "bash", script, "--check-dns-outcome", tc.allowed, tc.refused, tc.code80, tc.code81, tc.codeNever).CombinedOutput()
			if tc.ok != (err == nil) {
				t.Fatalf("exit error %v, want ok=%v; output %q", err, tc.ok, out)
			}
			if !strings.Contains(string(out), tc.wantInMessage) {
				t.Fatalf("output %q lacks %q", out, tc.wantInMessage)
			}
		})
	}
}
