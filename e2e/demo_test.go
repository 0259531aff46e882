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
