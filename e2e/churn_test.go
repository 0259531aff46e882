package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
)

const churnEndpoints = `endpoints:
- name: a
  labels: {app: a}
  ipv4: 10.211.0.1
- name: b
  labels: {app: b}
  ipv4: 10.211.0.2
`

// churnPolicy returns one of the two versions the churn test alternates.
// Both allow a->b TCP 8080 and 8081 and deny a->b TCP 9090 explicitly; they
// differ in rule order and in one extra port (7001 or 7002) that tells
// which version is in force.
func churnPolicy(version int) string {
	if version%2 == 0 {
		return cnp + `metadata: {name: b-churn}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports:
      - {port: "8080", protocol: TCP}
      - {port: "8081", protocol: TCP}
      - {port: "7001", protocol: TCP}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
`
	}
	return cnp + `metadata: {name: b-churn}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: "7002", protocol: TCP}]
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports: [{port: "8081", protocol: TCP}, {port: "8080", protocol: TCP}]
`
}

// churnMarkerPort is the port only version v allows.
func churnMarkerPort(version int) uint16 { return 7001 + uint16(version%2) }

const churnReplacements = 100

// TestPrivilegedPolicyReplaceChurn replaces b's policy 100 times, waiting
// for each version to be in force, while a long TCP stream and an HTTP
// keep-alive loop (one connection) run from a to b: nothing may break, and
// connects to the denied port never succeed.
func TestPrivilegedPolicyReplaceChurn(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "c", endpoints: churnEndpoints, policies: map[string]string{"p.yaml": churnPolicy(0)}})
	pa := endpointPeer(a, "a", "10.211.0.1")
	pb := endpointPeer(a, "b", "10.211.0.2")
	serveEcho(t, pb, []uint16{9090}, nil)
	sink := serveSink(t, pb, 8080)
	web := serveHTTP(t, pb, 8081)

	// Long stream: continuous writes from a to b:8080.
	stream, err := dialTCP(pa, netip.AddrPortFrom(pb.addr, 8080), 5*time.Second)
	if err != nil {
		t.Fatalf("open stream a->b:8080: %v", err)
	}
	defer stream.Close()

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var wg sync.WaitGroup
	var (
		written  atomic.Int64
		writeErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		writeErr = writeStream(ctx, stream, &written)
	}()

	// HTTP keep-alive loop from a's netns, one connection.
	var (
		requests, failures, newConns atomic.Int64
		firstFailure                 atomic.Value
	)
	client := podHTTPClient(pa)
	defer client.CloseIdleConnections()
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for ctx.Err() == nil {
			err := getOnce(client, "http://"+pb.addr.String()+":8081/ping", &newConns)
			requests.Add(1)
			if err != nil {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, err.Error())
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}()

	// Denied port: connects during the churn must never succeed.
	var attempts, leaks atomic.Int64
	var probeErrs sync.Map
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			err := probeTCP(pa, netip.AddrPortFrom(pb.addr, 9090), 200*time.Millisecond)
			attempts.Add(1)
			switch {
			case err == nil:
				leaks.Add(1)
			case !errors.Is(err, errNoAnswer):
				probeErrs.Store(err.Error(), nil)
			}
		}
	}()

	// Let the loops start before the churn does.
	waitUntil(t, "traffic flowing", 10*time.Second, func() bool {
		return written.Load() > 0 && requests.Load() > 0 && attempts.Load() > 0
	})
	start := time.Now()
	for i := 1; i <= churnReplacements; i++ {
		a.applyPolicy("p.yaml", churnPolicy(i))
		p, err := a.plan()
		if err != nil {
			t.Fatalf("replacement %d: plan: %v", i, err)
		}
		if !ingressAllows(p, "b", churnMarkerPort(i)) || ingressAllows(p, "b", churnMarkerPort(i+1)) {
			t.Fatalf("replacement %d: the plan in force is not version %d (marker port %d)", i, i%2, churnMarkerPort(i))
		}
	}
	churn := time.Since(start)
	stop()
	wg.Wait()

	if writeErr != nil {
		t.Errorf("stream a->b:8080 broke after %d bytes: %v", written.Load(), writeErr)
	}
	if cw, ok := stream.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			t.Errorf("close stream: %v", err)
		}
	}
	got, err := sink.wait(10 * time.Second)
	if err != nil {
		t.Errorf("stream receiver: %v", err)
	}
	if got != written.Load() {
		t.Errorf("stream: wrote %d bytes, b received %d", written.Load(), got)
	}
	if f := failures.Load(); f > 0 {
		t.Errorf("HTTP keep-alive loop: %d of %d requests failed; first: %v", f, requests.Load(), firstFailure.Load())
	}
	if n := web.conns.Load(); n != 1 || newConns.Load() != 1 {
		t.Errorf("HTTP keep-alive loop used %d connections (server saw %d), want 1", newConns.Load(), n)
	}
	if n := leaks.Load(); n > 0 {
		t.Errorf("%d of %d connects to the denied port 9090 succeeded during the churn", n, attempts.Load())
	}
	probeErrs.Range(func(k, _ any) bool {
		t.Errorf("connect to denied port 9090: unexpected error (not a drop): %v", k)
		return true
	})
	t.Logf("%d replacements in %v; stream %d bytes; %d HTTP requests on 1 connection; %d denied connects",
		churnReplacements, churn.Round(time.Millisecond), written.Load(), requests.Load(), attempts.Load())
}

// ingressAllows reports whether the plan's ingress of default/name has an
// allow entry that covers TCP port.
func ingressAllows(p *policy.Plan, name string, port uint16) bool {
	ep := p.Endpoint("default", name)
	if ep == nil {
		return false
	}
	for _, e := range ep.Ingress.Entries {
		if e.Verdict == policy.VerdictAllow && (e.Proto == policy.ProtoTCP || e.Proto == policy.ProtoAny) && e.Ports.Contains(port) && !(e.Ports.From == 0 && e.Ports.To == 0) {
			return true
		}
	}
	return false
}

// writeStream writes 16 KiB every 2 ms until ctx ends; every write must
// complete within 5 s.
func writeStream(ctx context.Context, c net.Conn, written *atomic.Int64) error {
	chunk := make([]byte, 16<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := c.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
			return err
		}
		n, err := c.Write(chunk)
		written.Add(int64(n))
		if err != nil {
			return err
		}
	}
}

// sinkServer counts the bytes of the first connection to a port until EOF.
type sinkServer struct {
	done chan struct{}
	n    int64
	err  error
}

func serveSink(t *testing.T, p peer, port uint16) *sinkServer {
	t.Helper()
	var ln net.Listener
	if err := p.do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	s := &sinkServer{done: make(chan struct{})}
	var conn atomic.Value
	go func() {
		defer close(s.done)
		c, err := ln.Accept()
		if err != nil {
			s.err = err
			return
		}
		conn.Store(c)
		defer c.Close()
		s.n, s.err = io.Copy(io.Discard, c)
	}()
	t.Cleanup(func() {
		ln.Close()
		if c, ok := conn.Load().(net.Conn); ok {
			c.Close()
		}
		<-s.done
	})
	return s
}

// wait returns the byte count once the sender closed.
func (s *sinkServer) wait(timeout time.Duration) (int64, error) {
	select {
	case <-s.done:
		return s.n, s.err
	case <-time.After(timeout):
		return 0, fmt.Errorf("no EOF within %v", timeout)
	}
}

// httpServer answers /ping with "pong" and counts connections.
type httpServer struct {
	conns atomic.Int64
}

func serveHTTP(t *testing.T, p peer, port uint16) *httpServer {
	t.Helper()
	var ln net.Listener
	if err := p.do(func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", p.name, err)
	}
	hs := &httpServer{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, "pong")
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				hs.conns.Add(1)
			}
		},
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
	return hs
}

// podHTTPClient is an HTTP client whose connections are opened in the
// peer's netns, with at most one connection per host, kept alive.
func podHTTPClient(p peer) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := p.do(func() error {
					var err error
					var d net.Dialer
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// getOnce does one GET, expects "pong", and counts connections it had to open.
func getOnce(c *http.Client, url string, newConns *atomic.Int64) error {
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			newConns.Add(1)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "pong" {
		return fmt.Errorf("GET %s: %s %q", url, resp.Status, body)
	}
	return nil
}

// waitUntil polls cond until it holds or fails the test after timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}
