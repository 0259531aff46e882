package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const badPolicyEndpoints = `endpoints:
- name: a
  labels: {app: a}
  ipv4: 10.214.0.1
- name: b
  labels: {app: b}
  ipv4: 10.214.0.2
`

// badPolicyAllowing allows a->b on the given TCP ports.
func badPolicyAllowing(ports ...string) string {
	var b strings.Builder
	b.WriteString(cnp + `metadata: {name: b-in}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports:
`)
	for _, p := range ports {
		b.WriteString("      - {port: \"" + p + "\", protocol: TCP}\n")
	}
	return b.String()
}

// TestPrivilegedBadPolicyKeepsOldInForce writes broken versions over a good
// policy file: the status names the file and the field, the good version
// stays in force (allowed traffic still passes, denied traffic is still
// dropped), and a fixed version then applies.
func TestPrivilegedBadPolicyKeepsOldInForce(t *testing.T) {
	requirePrivileged(t)
	good := badPolicyAllowing("8080")
	a := startAgent(t, agentSpec{short: "b", endpoints: badPolicyEndpoints, policies: map[string]string{"p.yaml": good}})
	pa := endpointPeer(a, "a", "10.214.0.1")
	pb := endpointPeer(a, "b", "10.214.0.2")
	serveEcho(t, pb, []uint16{8080, 8081}, nil)
	expectTCP(t, pa, pb, 8080, true)
	expectTCP(t, pa, pb, 8081, false)

	broken := []struct {
		name    string
		content string
		want    []string // substrings of the reported error
	}{
		{
			name: "invalid protocol",
			content: strings.Replace(badPolicyAllowing("8081", "8082"), `{port: "8082", protocol: TCP}`,
				`{port: "8082", protocol: TCPX}`, 1),
			want: []string{"p.yaml", "spec.ingress[0].toPorts[0].ports[1].protocol"},
		},
		{
			name:    "unknown field",
			content: strings.Replace(badPolicyAllowing("8081"), "fromEndpoints", "fromEndpoint", 1),
			want:    []string{"p.yaml", "fromEndpoint"},
		},
		{
			name:    "YAML syntax",
			content: badPolicyAllowing("8081") + "  egress: [\n",
			want:    []string{"p.yaml"},
		},
	}
	for _, bc := range broken {
		t.Run(bc.name, func(t *testing.T) {
			a.setPolicy("p.yaml", bc.content)
			st := a.waitStatus("policy error reported", 10*time.Second, func(st Status) bool { return len(st.PolicyErrors) > 0 })
			msg := strings.Join(st.PolicyErrors, "\n")
			t.Logf("reported: %s", msg)
			for _, w := range bc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("policy errors %q do not mention %q", msg, w)
				}
			}
			if st.Policies != 1 {
				t.Errorf("status: %d policies in force, want the previous 1", st.Policies)
			}
			if m, err := a.metrics(); err != nil {
				t.Error(err)
			} else if v, _ := m.sum("moat_policy_errors", nil); v != 1 {
				t.Errorf("moat_policy_errors = %v, want 1", v)
			}
			expectTCP(t, pa, pb, 8080, true)
			expectTCP(t, pa, pb, 8081, false)
			// Back to the good version before the next variant.
			a.applyPolicy("p.yaml", good)
		})
	}

	t.Run("fixed version applies", func(t *testing.T) {
		a.setPolicy("p.yaml", broken[0].content)
		a.waitStatus("policy error reported", 10*time.Second, func(st Status) bool { return len(st.PolicyErrors) > 0 })
		a.applyPolicy("p.yaml", badPolicyAllowing("8081"))
		expectTCP(t, pa, pb, 8081, true)
		expectTCP(t, pa, pb, 8080, false)
	})
}

// expectTCP probes src->dst TCP port and checks the outcome.
func expectTCP(t *testing.T, src, dst peer, port uint16, allowed bool) {
	t.Helper()
	timeout := 500 * time.Millisecond
	if allowed {
		timeout = 3 * time.Second
	}
	err := probe(src, dst.addr, protoTCP, port, timeout)
	switch {
	case allowed && err != nil:
		t.Errorf("%s->%s:%d: %v, want allowed", src.name, dst.name, port, err)
	case !allowed && !errors.Is(err, errNoAnswer):
		t.Errorf("%s->%s:%d: %v, want dropped", src.name, dst.name, port, err)
	}
}
