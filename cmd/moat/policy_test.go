package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

// runCLI executes the moat command with args and returns stdout, stderr and
// the exit code main would use.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := newRootCommand()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		return out.String(), errb.String() + err.Error(), exitCode(err)
	}
	return out.String(), errb.String(), 0
}

const root = "../.."

func examplePolicies(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(root, "examples", "*", "policies"))
	if err != nil || len(dirs) < 6 {
		t.Fatalf("example policy dirs: %v (found %d)", err, len(dirs))
	}
	return dirs
}

func TestPolicyValidateExamples(t *testing.T) {
	out, stderr, code := runCLI(t, append([]string{"policy", "validate"}, examplePolicies(t)...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "policies valid") {
		t.Fatalf("output %q", out)
	}
}

func TestPolicyValidateExamplesDir(t *testing.T) {
	// The endpoints files beside the policies carry kind Endpoints and are
	// skipped, so the whole examples tree validates.
	_, stderr, code := runCLI(t, "policy", "validate", filepath.Join(root, "examples"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestPolicyValidateInvalid(t *testing.T) {
	cases := []struct {
		file string
		want string // "doc N: field.path"
	}{
		{"bad-regex.yaml", "doc 2: spec.egress[0].toPorts[0].rules.http[1].path: invalid regex"},
		{"l7-in-deny.yaml", "doc 1: spec.ingressDeny[0].toPorts[0].rules:"},
		{"http-on-udp.yaml", "doc 1: spec.ingress[0].toPorts[0].ports[0].protocol:"},
		{"unknown-field.yaml", "doc 1: specs[1].egress[0].toPortz: unknown field"},
		{"bad-dns-pattern.yaml", "doc 1: spec.egress[0].toPorts[0].rules.dns[1].matchPattern:"},
		{"port-70000.yaml", "doc 1: spec.ingress[0].toPorts[0].ports[0].port: port 70000"},
		{"endport-below-port.yaml", "doc 2: spec.egress[0].toPorts[0].ports[0].endPort:"},
		{"wrong-apiversion.yaml", "doc 1: kind: unsupported apiVersion/kind"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(root, "policy", "testdata", "invalid", tc.file)
			_, stderr, code := runCLI(t, "policy", "validate", path)
			if code == 0 {
				t.Fatalf("exit 0 for an invalid policy")
			}
			if want := path + ": " + tc.want; !strings.Contains(stderr, want) {
				t.Fatalf("stderr %q does not contain %q", stderr, want)
			}
		})
	}
}

func TestPolicyValidateDirReportsEveryError(t *testing.T) {
	_, stderr, code := runCLI(t, "policy", "validate", filepath.Join(root, "policy", "testdata", "invalid"))
	if code == 0 {
		t.Fatal("exit 0")
	}
	lines := strings.Count(stderr, "invalid/")
	if lines < 8 {
		t.Fatalf("%d error lines, want one per invalid file (8):\n%s", lines, stderr)
	}
}

func TestPolicyCompileDeterministic(t *testing.T) {
	for _, dir := range examplePolicies(t) {
		ex := filepath.Dir(dir)
		t.Run(filepath.Base(ex), func(t *testing.T) {
			args := []string{"policy", "compile", "--policies", dir, "--endpoints", filepath.Join(ex, "endpoints.yaml"), "-o", "json"}
			a, stderr, code := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			b, _, _ := runCLI(t, args...)
			if a != b {
				t.Fatal("two compiles of the same input differ")
			}
			var plan policy.Plan
			if err := json.Unmarshal([]byte(a), &plan); err != nil {
				t.Fatalf("output is not a Plan: %v", err)
			}
			if len(plan.Endpoints) == 0 {
				t.Fatal("plan has no endpoints")
			}
		})
	}
}

type traceCase struct {
	name    string
	example string
	args    []string
	allowed bool
	want    []string // substrings of the text output
}

func TestPolicyTraceDocumentedOutcomes(t *testing.T) {
	cases := []traceCase{
		{"starwars empire lands", "starwars",
			[]string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "POST", "--http-path", "/v1/request-landing"},
			true, []string{"redirected to http proxy", "Verdict: ALLOWED"}},
		{"starwars exhaust port denied by L7", "starwars",
			[]string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "PUT", "--http-path", "/v1/exhaust-port"},
			false, []string{"redirected to http proxy", "403 Access denied", "Verdict: DENIED"}},
		{"starwars exhaust port via path tricks", "starwars",
			[]string{"--from", "default/tiefighter", "--to", "default/deathstar", "--port", "80/TCP", "--http-method", "POST", "--http-path", "/v1/request-landing/../exhaust-port"},
			false, []string{"403 Access denied"}},
		{"starwars alliance denied at L3/L4", "starwars",
			[]string{"--from", "default/xwing", "--to", "default/deathstar", "--port", "80/TCP"},
			false, []string{"default deny", "Verdict: DENIED"}},
		{"dns: an allowed name goes through the DNS proxy", "dns-fqdns",
			[]string{"--from", "default/client", "--to", "kube-system/coredns", "--port", "53/UDP", "--dns-query", "api.example.com"},
			true, []string{"redirected to dns proxy", "DNS query allowed by", "Verdict: ALLOWED"}},
		{"dns: another name is refused", "dns-fqdns",
			[]string{"--from", "default/client", "--to", "kube-system/coredns", "--port", "53/UDP", "--dns-query", "www.example.org"},
			false, []string{"redirected to dns proxy", "no DNS rule matches: REFUSED", "Verdict: DENIED"}},
		{"k8s default deny: ingress", "k8s-default-deny",
			[]string{"--from", "default/web", "--to", "default/db", "--port", "5432/TCP"},
			false, []string{"Verdict: DENIED"}},
		{"k8s namespace: frontend allowed", "k8s-allow-from-namespace",
			[]string{"--from", "frontend/ui", "--to", "backend/api", "--port", "8080/TCP"},
			true, []string{"Verdict: ALLOWED"}},
		{"k8s namespace: other namespace denied", "k8s-allow-from-namespace",
			[]string{"--from", "tools/debug", "--to", "backend/api", "--port", "8080/TCP"},
			false, []string{"Verdict: DENIED"}},
		{"k8s namespace: wrong port denied", "k8s-allow-from-namespace",
			[]string{"--from", "frontend/ui", "--to", "backend/api", "--port", "9090/TCP"},
			false, []string{"Verdict: DENIED"}},
		{"k8s ipBlock inside cidr allowed", "k8s-ipblock-except",
			[]string{"--from", "default/web", "--to", "10.1.2.3", "--port", "443/TCP"},
			true, []string{"Verdict: ALLOWED"}},
		{"k8s ipBlock except denied", "k8s-ipblock-except",
			[]string{"--from", "default/web", "--to", "10.0.5.7", "--port", "443/TCP"},
			false, []string{"Verdict: DENIED"}},
		{"k8s ipBlock outside cidr denied", "k8s-ipblock-except",
			[]string{"--from", "default/web", "--to", "192.0.2.1", "--port", "443/TCP"},
			false, []string{"Verdict: DENIED"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := filepath.Join(root, "examples", tc.example)
			args := append([]string{"policy", "trace", "--policies", filepath.Join(ex, "policies"), "--endpoints", filepath.Join(ex, "endpoints.yaml")}, tc.args...)
			out, stderr, code := runCLI(t, args...)
			if tc.allowed && code != 0 || !tc.allowed && code != 2 {
				t.Fatalf("exit %d (allowed=%v): %s\n%s", code, tc.allowed, out, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			js, _, _ := runCLI(t, append(args, "-o", "json")...)
			var res policy.TraceResult
			if err := json.Unmarshal([]byte(js), &res); err != nil {
				t.Fatalf("json output: %v\n%s", err, js)
			}
			if res.Allowed() != tc.allowed {
				t.Fatalf("json verdict %s, want allowed=%v", res.Verdict, tc.allowed)
			}
		})
	}
}

func TestPolicyTraceBadFlags(t *testing.T) {
	ex := filepath.Join(root, "examples", "starwars")
	base := []string{"policy", "trace", "--policies", filepath.Join(ex, "policies"), "--endpoints", filepath.Join(ex, "endpoints.yaml"), "--from", "default/tiefighter", "--to", "default/deathstar"}
	cases := map[string][]string{
		"--port \"80/XYZ\": unknown protocol": {"--port", "80/XYZ"},
		"--port \"99999/TCP\"":                {"--port", "99999/TCP"},
		"--http-* flags need a TCP port":      {"--port", "53/UDP", "--http-method", "GET"},
		"--http-header \"nocolon\"":           {"--port", "80/TCP", "--http-header", "nocolon"},
		"no local endpoint default/ghost":     {"--port", "80/TCP", "--from", "default/ghost"},
	}
	for want, extra := range cases {
		t.Run(want, func(t *testing.T) {
			_, stderr, code := runCLI(t, append(append([]string{}, base...), extra...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (usage error), stderr %q", code, stderr)
			}
			if !strings.Contains(stderr, want) {
				t.Fatalf("stderr %q lacks %q", stderr, want)
			}
		})
	}
}

// TestPolicyValidateEndpoints: `validate --endpoints` checks an endpoints
// file and names file and field; a good one is counted.
func TestPolicyValidateEndpoints(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "endpoints.yaml")
	if err := os.WriteFile(bad, []byte("endpoints:\n- {name: web, ipv4: 10.0.0.1}\n- {name: db, ipv4: not-an-ip, lables: {}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "policy", "validate", "--endpoints", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	for _, want := range []string{bad + ": endpoints[1].ipv4: ", bad + ": endpoints[1].lables: unknown field"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
	// Policies and endpoints together: errors from both are listed.
	_, stderr, code = runCLI(t, "policy", "validate", filepath.Join(root, "policy", "testdata", "invalid", "port-70000.yaml"), "--endpoints", bad)
	if code != 1 || !strings.Contains(stderr, "port 70000 out of range") || !strings.Contains(stderr, bad+": endpoints[1]") {
		t.Fatalf("exit %d, stderr %q: want policy and endpoints errors", code, stderr)
	}
	good := filepath.Join(root, "examples", "starwars", "endpoints.yaml")
	out, stderr, code := runCLI(t, "policy", "validate", filepath.Join(root, "examples", "starwars", "policies"), "--endpoints", good)
	if code != 0 || !strings.Contains(out, "1 policies valid") || !strings.Contains(out, good+": 3 endpoints valid") {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, stderr)
	}
	if _, stderr, code := runCLI(t, "policy", "validate"); code != 1 || !strings.Contains(stderr, "nothing to validate") {
		t.Fatalf("no arguments: exit %d, stderr %q", code, stderr)
	}
}
