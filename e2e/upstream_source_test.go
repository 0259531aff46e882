package e2e

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
)

const upstreamSourceEndpoints = `endpoints:
- name: server
  labels: {app: server}
  ipv4: 10.218.0.10
  ipv6: fd00:218::10
- name: guarded
  labels: {app: guarded}
  ipv4: 10.218.0.11
  ipv6: fd00:218::11
- name: client
  labels: {app: client}
  ipv4: 10.218.0.20
  ipv6: fd00:218::20
`

// The client's egress to "server" and to machines outside the endpoints
// ("world", IPv4 and IPv6) goes through the egress HTTP proxy; "guarded"'s ingress from the
// client goes through the ingress HTTP proxy.
const upstreamSourcePolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: client-egress
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
  - toCIDR: [192.0.2.77/32, "2001:db8:218::77/128"]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/.*"}]
  - toEndpoints:
    - matchLabels: {app: guarded}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: guarded-ingress
spec:
  endpointSelector:
    matchLabels: {app: guarded}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: client}
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/.*"}]
`

// uplinkWorldPeer is worldPeer that also returns the host side of its veth:
// the agent's uplink towards it.
func uplinkWorldPeer(t *testing.T, name, addr, gateway string) (peer, string) {
	t.Helper()
	pod := testutil.NewPod(t, testutil.PodOptions{Addr: netip.MustParseAddr(addr), Gateway: netip.MustParseAddr(gateway)})
	return peer{name: name, ref: addr, netns: pod.NsPath, addr: pod.Addr}, pod.HostIf
}

// TestPrivilegedProxyUpstreamKeepsClientAddress: through the embedded
// proxy, egress and ingress, IPv4 and IPv6, the server sees the client's own
// address (not the node's gateway), also a server outside the endpoints
// ("world"), reached through the egress proxy over an uplink (the agent's
// uplinks config), whose replies the datapath hands back to the proxy; the
// proxy still denies what its rules do not allow.
func TestPrivilegedProxyUpstreamKeepsClientAddress(t *testing.T) {
	requirePrivileged(t)
	world4, up4 := uplinkWorldPeer(t, "uw", "192.0.2.77", "10.218.255.254")
	world6, up6 := uplinkWorldPeer(t, "uw6", "2001:db8:218::77", "fe80::1")
	a := startAgent(t, agentSpec{short: "u", endpoints: upstreamSourceEndpoints,
		policies: map[string]string{"proxied.yaml": upstreamSourcePolicy},
		config:   "uplinks: [" + strings.Join([]string{up4, up6}, ", ") + "]\n"})
	worldPeers := map[string]*seenPeers{
		"192.0.2.77":       serveDeathstar(t, world4),
		"2001:db8:218::77": serveDeathstarOn(t, world6, "tcp6", "[::]:80"),
	}
	a.waitStatus("proxy ready", 20*time.Second, func(st Status) bool { return st.ProxyReady && st.ProxyError == "" })

	cases := []struct {
		name, server, serverAddr, clientAddr, network, listen string
	}{
		{"egress ipv4", "server", "10.218.0.10", "10.218.0.20", "tcp4", "0.0.0.0:80"},
		{"egress ipv6", "server", "fd00:218::10", "fd00:218::20", "tcp6", "[::]:80"},
		{"ingress ipv4", "guarded", "10.218.0.11", "10.218.0.20", "tcp4", "0.0.0.0:80"},
		{"ingress ipv6", "guarded", "fd00:218::11", "fd00:218::20", "tcp6", "[::]:80"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			server := endpointPeer(a, c.server, c.serverAddr)
			client := endpointPeer(a, "client", c.clientAddr)
			peers := serveDeathstarOn(t, server, c.network, c.listen)
			status, body, err := shipRequest(client, server, "GET", "/x")
			if err != nil || status != http.StatusOK {
				t.Fatalf("request: %d %q %v, want 200", status, body, err)
			}
			if seen := peers.last(); seen != client.addr {
				t.Errorf("the server saw the request come from %v, want the client's address %v", seen, client.addr)
			}
			status, _, err = shipRequest(client, server, "POST", "/x")
			if err != nil || status != http.StatusForbidden {
				t.Errorf("POST: %d %v, want 403 from the proxy", status, err)
			}
		})
	}
	for _, c := range []struct {
		name       string
		world      peer
		clientAddr string
	}{
		{"world ipv4", world4, "10.218.0.20"},
		{"world ipv6", world6, "fd00:218::20"},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := endpointPeer(a, "client", c.clientAddr)
			status, body, err := shipRequest(client, c.world, "GET", "/x")
			if err != nil || status != http.StatusOK {
				t.Fatalf("request: %d %q %v, want 200", status, body, err)
			}
			if seen := worldPeers[c.world.addr.String()].last(); seen != client.addr {
				t.Errorf("the world server saw the request come from %v, want the client's address %v", seen, client.addr)
			}
			// The world server is reached through the proxy: its rules apply.
			status, _, err = shipRequest(client, c.world, "POST", "/x")
			if err != nil || status != http.StatusForbidden {
				t.Errorf("POST: %d %v, want 403 from the proxy", status, err)
			}
		})
	}
}
