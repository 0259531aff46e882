package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPrivilegedStarWarsThroughEmbeddedProxy runs the Star Wars example with
// the agent's default (embedded) proxy: every request's fate — answered by
// the deathstar, refused by the proxy with 403 "Access denied", or dropped
// before it reaches a proxy — must be what `moat policy trace` with the same
// HTTP request says.
func TestPrivilegedStarWarsThroughEmbeddedProxy(t *testing.T) {
	requirePrivileged(t)
	example, err := os.ReadFile("../examples/starwars/policies/policy.yaml")
	if err != nil {
		t.Fatalf("read the Star Wars example: %v", err)
	}
	endpoints := strings.ReplaceAll(starwarsEndpoints, "10.215.", "10.216.")
	a := startAgent(t, agentSpec{short: "s", endpoints: endpoints, policies: map[string]string{"policy.yaml": string(example)}})
	deathstar := endpointPeer(a, "deathstar", "10.216.0.10")
	ships := map[string]peer{
		"tiefighter": endpointPeer(a, "tiefighter", "10.216.0.20"),
		"xwing":      endpointPeer(a, "xwing", "10.216.0.30"),
	}
	peers := serveDeathstar(t, deathstar)
	a.waitStatus("proxy ready", 20*time.Second, func(st Status) bool { return st.ProxyReady && st.ProxyError == "" })

	cases := []struct {
		ship, method, path string
		want               int // HTTP status; 0: dropped before any proxy
	}{
		{ship: "tiefighter", method: "POST", path: "/v1/request-landing", want: http.StatusOK},
		{ship: "tiefighter", method: "PUT", path: "/v1/exhaust-port", want: http.StatusForbidden},
		{ship: "tiefighter", method: "GET", path: "/v1/request-landing", want: http.StatusForbidden},
		{ship: "tiefighter", method: "POST", path: "/v1/request-landing/", want: http.StatusForbidden},
		{ship: "xwing", method: "POST", path: "/v1/request-landing", want: 0},
	}
	for _, c := range cases {
		t.Run(c.ship+" "+c.method+" "+c.path, func(t *testing.T) {
			res := traceHTTP(t, a, "default/"+c.ship, "default/deathstar", c.method, c.path)
			traced := 0
			switch {
			case res.Allowed():
				traced = http.StatusOK
			case len(res.Steps) > 0 && res.Steps[len(res.Steps)-1].HTTP != nil:
				traced = res.Steps[len(res.Steps)-1].HTTP.Status
			}
			if traced != c.want {
				t.Errorf("moat policy trace: %d (%s), want %d", traced, res.Verdict, c.want)
			}
			status, body, err := shipRequest(ships[c.ship], deathstar, c.method, c.path)
			switch {
			case c.want == 0 && !errors.Is(err, errNoAnswer):
				t.Fatalf("request: status %d, err %v; want dropped", status, err)
			case c.want == 0:
			case err != nil:
				t.Fatalf("request: %v", err)
			case status != traced:
				t.Errorf("real request got %d %q, moat policy trace says %d", status, body, traced)
			case status == http.StatusForbidden && strings.TrimSpace(body) != "Access denied":
				t.Errorf("403 body %q, want \"Access denied\"", body)
			case status == http.StatusOK && body != "landing granted":
				t.Errorf("200 body %q, want the deathstar's answer", body)
			case status == http.StatusOK:
				// The proxy's upstream keeps the client's address: the
				// deathstar sees the ship, not the node's gateway.
				if seen := peers.last(); seen != ships[c.ship].addr {
					t.Errorf("the deathstar saw the request come from %v, want the %s's address %v", seen, c.ship, ships[c.ship].addr)
				}
			}
		})
	}
}

// seenPeers records the peer address of each request a server answered.
type seenPeers struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (s *seenPeers) add(remote string) {
	ap, err := netip.ParseAddrPort(remote)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.addrs = append(s.addrs, netip.Addr{})
		return
	}
	s.addrs = append(s.addrs, ap.Addr().Unmap())
}

// last returns the peer of the latest request (the zero Addr if none).
func (s *seenPeers) last() netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.addrs) == 0 {
		return netip.Addr{}
	}
	return s.addrs[len(s.addrs)-1]
}

// serveDeathstar answers every request on port 80 (IPv4) with "landing
// granted" and records the peer address each request came from.
func serveDeathstar(t *testing.T, p peer) *seenPeers {
	t.Helper()
	return serveDeathstarOn(t, p, "tcp4", "0.0.0.0:80")
}

// serveDeathstarOn is serveDeathstar on the given network and address.
func serveDeathstarOn(t *testing.T, p peer, network, addr string) *seenPeers {
	t.Helper()
	seen := &seenPeers{}
	var ln net.Listener
	if err := p.do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.add(r.RemoteAddr)
			_, _ = io.WriteString(w, "landing granted")
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return seen
}

// shipRequest sends one HTTP request from src to dst:80 on a new
// connection; errNoAnswer when the connection cannot be opened in time.
func shipRequest(src, dst peer, method, path string) (int, string, error) {
	conn, err := dialTCP(src, netip.AddrPortFrom(dst.addr, 80), 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(context.Context, string, string) (net.Conn, error) { return conn, nil },
		},
	}
	defer client.CloseIdleConnections()
	host := dst.addr.String()
	if dst.addr.Is6() {
		host = "[" + host + "]"
	}
	req, err := http.NewRequest(method, "http://"+host+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, string(body), nil
}
