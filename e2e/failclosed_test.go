package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
)

// The Star Wars demo's endpoints, in this test's address range.
const starwarsEndpoints = `endpoints:
- name: deathstar
  labels: {org: empire, class: deathstar}
  ipv4: 10.215.0.10
- name: tiefighter
  labels: {org: empire, class: tiefighter}
  ipv4: 10.215.0.20
- name: xwing
  labels: {org: alliance, class: xwing}
  ipv4: 10.215.0.30
`

// TestPrivilegedHTTPFailsClosedWithoutProxy runs the Star Wars policy with
// no proxy connected: the tiefighter's traffic to deathstar:80, which the
// policy sends to the HTTP proxy, is dropped as proxy-unavailable rather
// than passed, and the xwing's is dropped by policy. The agent runs with
// --proxy external: it serves xDS but starts no proxy of its own, and none
// connects.
func TestPrivilegedHTTPFailsClosedWithoutProxy(t *testing.T) {
	requirePrivileged(t)
	example, err := os.ReadFile("../examples/starwars/policies/policy.yaml")
	if err != nil {
		t.Fatalf("read the Star Wars example: %v", err)
	}
	a := startAgent(t, agentSpec{short: "f", endpoints: starwarsEndpoints, policies: map[string]string{"policy.yaml": string(example)}, proxy: "external"})
	deathstar := endpointPeer(a, "deathstar", "10.215.0.10")
	tiefighter := endpointPeer(a, "tiefighter", "10.215.0.20")
	xwing := endpointPeer(a, "xwing", "10.215.0.30")
	serveEcho(t, deathstar, []uint16{80}, nil)

	// What users are told: the landing request is allowed through the HTTP
	// proxy.
	res := traceHTTP(t, a, "default/tiefighter", "default/deathstar", "POST", "/v1/request-landing")
	if !res.Allowed() || len(res.Steps) == 0 || res.Steps[len(res.Steps)-1].Proxy != "http" {
		t.Errorf("trace tiefighter->deathstar POST /v1/request-landing: %s, want allowed via the http proxy", res.String())
	}

	st := a.waitStatus("proxy reported missing", 10*time.Second, func(st Status) bool { return !st.ProxyReady && st.ProxyError != "" })
	t.Logf("proxy error: %s", st.ProxyError)

	cases := []struct {
		name   string
		src    peer
		reason string
	}{
		{name: "tiefighter needs the missing proxy", src: tiefighter, reason: "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL"},
		{name: "xwing is denied by policy", src: xwing, reason: "POLICY_DENIED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := probe(c.src, deathstar.addr, protoTCP, 80, time.Second); !errors.Is(err, errNoAnswer) {
				t.Fatalf("%s->deathstar:80: %v, want dropped", c.src.name, err)
			}
			f := a.waitFlow(c.src.name+"->deathstar dropped", "last=200&verdict=DROPPED", 5*time.Second, func(f flowRecord) bool {
				return f.IP.Source == c.src.addr.String() && f.L4.DestinationPort == 80
			})
			if f.DropReason != c.reason {
				t.Errorf("drop reason %q, want %q", f.DropReason, c.reason)
			}
			if f.Source.PodName != c.src.name || f.Destination.PodName != "deathstar" {
				t.Errorf("flow %s -> %s, want %s -> deathstar", f.Source.PodName, f.Destination.PodName, c.src.name)
			}
		})
	}
	m, err := a.metrics()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := m.sum("moat_proxy_redirects_fail_closed_total", nil); v < 1 {
		t.Errorf("moat_proxy_redirects_fail_closed_total = %v, want at least 1", v)
	}
	if v, _ := m.sum("hubble_drop_total", map[string]string{"reason": "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL", "protocol": "TCP"}); v < 1 {
		t.Errorf("hubble_drop_total for the missing proxy = %v, want at least 1", v)
	}
}

// traceHTTP runs `moat policy trace` for an HTTP request on port 80.
func traceHTTP(t *testing.T, a *testAgent, from, to, method, path string) policy.TraceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bins.cli, "policy", "trace", "-o", "json",
		"--policies", a.policyDir, "--endpoints", a.endpointsFile,
		"--from", from, "--to", to, "--port", "80/TCP", "--http-method", method, "--http-path", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
		t.Fatalf("moat policy trace: %v: %s", err, stderr.Bytes())
	}
	var res policy.TraceResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("decode trace %q: %v", stdout.Bytes(), err)
	}
	return res
}
