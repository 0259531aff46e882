package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/internal/adsclient"
)

const stalledEndpoints = `endpoints:
- name: server
  labels: {app: server}
  ipv4: 10.218.0.10
- name: client
  labels: {app: client}
  ipv4: 10.218.0.20
`

// stalledPolicy sends client->server:80 to the HTTP proxy and, with l4,
// allows client->server:8080 at L3/L4.
func stalledPolicy(l4 bool) string {
	p := `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/ping"}]}
`
	if l4 {
		p += `  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`
	}
	return p
}

// TestPrivilegedL4NeverWaitsOnProxy: with a proxy that subscribed and never
// ACKs (and an ACK timeout of an hour), an L3/L4 revocation and a new L3/L4
// allow take effect while the proxy's version stays un-ACKed. It measures
// both delays (policy file written → first refused / first accepted
// connection) with no proxy and with the stalled one, and logs p50/p99.
func TestPrivilegedL4NeverWaitsOnProxy(t *testing.T) {
	requirePrivileged(t)
	const iterations = 50
	a := startAgent(t, agentSpec{short: "l", endpoints: stalledEndpoints,
		policies: map[string]string{"p.yaml": stalledPolicy(true)}, proxy: "external", config: "ackTimeout: 1h\n"})
	server := endpointPeer(a, "server", "10.218.0.10")
	client := endpointPeer(a, "client", "10.218.0.20")
	serveEcho(t, server, []uint16{8080}, nil)
	dst := netip.AddrPortFrom(server.addr, 8080)

	measure := func(t *testing.T) (revoke, allow []time.Duration) {
		t.Helper()
		for range iterations {
			// Each delay ends when the first probe that sees the change
			// sent its SYN.
			var probe time.Time
			start := time.Now()
			a.setPolicy("p.yaml", stalledPolicy(false))
			waitUntil(t, "revocation of 8080", 30*time.Second, func() bool {
				probe = time.Now()
				c, err := dialTCP(client, dst, 20*time.Millisecond)
				if err == nil {
					c.Close()
					return false
				}
				return true
			})
			revoke = append(revoke, probe.Sub(start))
			start = time.Now()
			a.setPolicy("p.yaml", stalledPolicy(true))
			waitUntil(t, "allow of 8080", 30*time.Second, func() bool {
				probe = time.Now()
				c, err := dialTCP(client, dst, 10*time.Millisecond)
				if err != nil {
					return false
				}
				c.Close()
				return true
			})
			allow = append(allow, probe.Sub(start))
		}
		return revoke, allow
	}

	// No proxy at all: the baseline.
	if err := probeTCP(client, dst, 5*time.Second); err != nil {
		t.Fatalf("client->server:8080 before the test: %v", err)
	}
	noneRevoke, noneAllow := measure(t)

	// A proxy that subscribes and never ACKs.
	conn, err := adsclient.Dial("unix://" + filepath.Join(a.runDir, "xds.sock"))
	if err != nil {
		t.Fatalf("dial xds: %v", err)
	}
	defer conn.Close()
	st, err := conn.Open(t.Context(), adsclient.SotW, "e2e-node")
	if err != nil {
		t.Fatalf("open ads stream: %v", err)
	}
	defer st.Close()
	for _, typeURL := range []string{resource.ClusterType, resource.ListenerType} {
		if err := st.Subscribe(typeURL); err != nil {
			t.Fatalf("subscribe %s: %v", typeURL, err)
		}
	}
	var wg sync.WaitGroup
	var received sync.Map
	wg.Add(1)
	go func() { // reads every response, ACKs none
		defer wg.Done()
		for {
			r, err := st.Recv()
			if err != nil {
				return
			}
			received.Store(r.TypeURL, r.Version)
		}
	}()
	defer wg.Wait()
	defer st.Close()
	a.waitStatus("the stalled proxy subscribed", 15*time.Second, func(s Status) bool {
		for _, n := range s.XDS {
			if n.Node == "e2e-node" && n.Subscribed {
				return true
			}
		}
		return false
	})
	stalledRevoke, stalledAllow := measure(t)
	s, err := a.status()
	if err != nil {
		t.Fatal(err)
	}
	if s.ProxyReady {
		t.Errorf("status says the proxy is ready; the stalled proxy never ACKed")
	}
	if _, ok := received.Load(resource.ListenerType); !ok {
		t.Errorf("the stalled proxy received no listeners: it was not asked for an ACK")
	}

	report := func(name string, d []time.Duration) string {
		d = slices.Clone(d)
		slices.Sort(d)
		p := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
		return fmt.Sprintf("%-26s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms", name,
			float64(p(0.50).Microseconds())/1000, float64(p(0.99).Microseconds())/1000, float64(d[len(d)-1].Microseconds())/1000)
	}
	lines := []string{
		fmt.Sprintf("L3/L4 change delays over %d iterations (agent poll interval %s, ACK timeout 1h):", iterations, pollInterval),
		report("revocation, no proxy", noneRevoke),
		report("revocation, stalled proxy", stalledRevoke),
		report("new allow, no proxy", noneAllow),
		report("new allow, stalled proxy", stalledAllow),
	}
	t.Log(strings.Join(lines, "\n"))
}
