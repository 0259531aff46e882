package e2e

import (
	"net/http"
	"testing"
	"time"
)

const upstreamSourceEndpoints = `endpoints:
- name: server
  labels: {app: server}
  ipv4: 10.218.0.10
- name: client
  labels: {app: client}
  ipv4: 10.218.0.20
`

// The client's egress goes through the HTTP proxy to a local endpoint and to
// a machine outside the endpoints ("world").
const upstreamSourcePolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: client-egress-http
spec:
  endpointSelector:
    matchLabels: {app: client}
  egress:
  - toEndpoints:
    - matchLabels: {app: server}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/.*"}]
  - toCIDR: [192.0.2.77/32]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/.*"}]
`

// TestPrivilegedEgressProxyKeepsClientAddress: through the embedded egress
// proxy, a local endpoint's server sees the client's own address (not the
// node's gateway), and a server outside the endpoints is still reached (from
// the node's address: its replies arrive on a host interface that has no
// return program).
func TestPrivilegedEgressProxyKeepsClientAddress(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "u", endpoints: upstreamSourceEndpoints, policies: map[string]string{"egress.yaml": upstreamSourcePolicy}})
	server := endpointPeer(a, "server", "10.218.0.10")
	client := endpointPeer(a, "client", "10.218.0.20")
	world := worldPeer(t, "uw", "192.0.2.77", "10.218.255.254")
	serverPeers := serveDeathstar(t, server)
	worldPeers := serveDeathstar(t, world)
	a.waitStatus("proxy ready", 20*time.Second, func(st Status) bool { return st.ProxyReady && st.ProxyError == "" })

	t.Run("local endpoint sees the client", func(t *testing.T) {
		status, body, err := shipRequest(client, server, "GET", "/x")
		if err != nil || status != http.StatusOK {
			t.Fatalf("request: %d %q %v, want 200", status, body, err)
		}
		if seen := serverPeers.last(); seen != client.addr {
			t.Errorf("the server saw the request come from %v, want the client's address %v", seen, client.addr)
		}
	})
	t.Run("world server is reached", func(t *testing.T) {
		status, body, err := shipRequest(client, world, "GET", "/x")
		if err != nil || status != http.StatusOK {
			t.Fatalf("request: %d %q %v, want 200", status, body, err)
		}
		if seen := worldPeers.last(); !seen.IsValid() {
			t.Errorf("the world server recorded no peer")
		}
	})
	t.Run("denied by the proxy", func(t *testing.T) {
		status, _, err := shipRequest(client, server, "POST", "/x")
		if err != nil || status != http.StatusForbidden {
			t.Fatalf("request: %d %v, want 403", status, err)
		}
	})
}
