package e2e

import (
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// Service translation through the agent in standalone mode: static
// Services in the agent config, endpoints from the endpoints file.

const svcEndpoints = `endpoints:
- name: client
  labels: {app: client}
  ipv4: 10.221.0.1
- name: a
  labels: {app: a}
  ipv4: 10.221.0.2
- name: b
  labels: {app: b}
  ipv4: 10.221.0.3
`

// The client may reach a only; nothing is said about b.
const svcPolicy = cnp + `metadata: {name: client-to-a}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: a}}]
`

const svcConfig = `serviceTranslation: true
services:
- frontend: 10.96.221.10:80/tcp
  backends: ["10.221.0.2:8080"]
- frontend: 10.96.221.10:53/udp
  backends: ["10.221.0.2:5353"]
- frontend: 10.96.221.11:80/tcp
  backends: ["10.221.0.3:8080"]
- frontend: 10.96.221.12:80/tcp
`

// TestPrivilegedAgentServices: the client's egress policy is judged on the
// backend a VIP leads to (a: allowed, b: dropped), a VIP without backends
// refuses, UDP works through the VIP, the translation survives a SIGKILL of
// the agent and a restart, and its counters are exported.
func TestPrivilegedAgentServices(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "sv", endpoints: svcEndpoints, policies: map[string]string{"p.yaml": svcPolicy}, config: svcConfig})
	client := endpointPeer(a, "client", "10.221.0.1")
	serveEcho(t, endpointPeer(a, "a", "10.221.0.2"), []uint16{8080}, []uint16{5353})
	serveEcho(t, endpointPeer(a, "b", "10.221.0.3"), []uint16{8080}, nil)
	toA := netip.MustParseAddrPort("10.96.221.10:80")
	toB := netip.MustParseAddrPort("10.96.221.11:80")
	udpA := netip.MustParseAddrPort("10.96.221.10:53")
	empty := netip.MustParseAddrPort("10.96.221.12:80")

	check := func(when string) {
		t.Helper()
		if err := probeTCP(client, toA, 2*time.Second); err != nil {
			t.Fatalf("%s: client -> VIP of a: %v", when, err)
		}
		if err := probeUDP(client, udpA, 2*time.Second); err != nil {
			t.Fatalf("%s: client -> udp VIP of a: %v", when, err)
		}
		if err := probeTCP(client, toB, 500*time.Millisecond); !errors.Is(err, errNoAnswer) {
			t.Fatalf("%s: client -> VIP of b: %v; want no answer (egress policy judged on b)", when, err)
		}
		if err := probeTCP(client, empty, 2*time.Second); !isRefused(err) {
			t.Fatalf("%s: client -> VIP without backends: %v; want connection refused", when, err)
		}
	}
	check("running")
	m, err := a.metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := m.sum("moat_service_translation_calls_total", map[string]string{"result": "translated"}); n < 3 {
		t.Errorf("moat_service_translation_calls_total{result=translated} = %v, want at least 3", n)
	}
	if n, _ := m.sum("moat_service_frontends", nil); n != 4 {
		t.Errorf("moat_service_frontends = %v, want 4", n)
	}

	a.kill(syscall.SIGKILL)
	check("agent down")
	a.start()
	check("agent restarted")
}
