package l7proxy_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/http2"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// TestPlanChangeAppliesToOpenConnections: a tightened policy applies to the
// next request of a connection that is already open, over HTTP/1.1
// keep-alive and over HTTP/2 (h2c with prior knowledge).
func TestPlanChangeAppliesToOpenConnections(t *testing.T) {
	tighten := func(e *env) {
		plan := starwarsPlan(e.upstream.Port())
		plan.Endpoints[0].Ingress.HTTP[0].Rules[0].Rule = &policy.HTTPRule{Method: "PUT", Path: "/v1/exhaust-port"}
		e.setPlan(plan)
		e.waitACK()
	}
	t.Run("http1 keep-alive", func(t *testing.T) {
		e := newEnv(t)
		c := e.dial(tiefighterIP)
		br := bufio.NewReader(c)
		send := func(req string) (int, string) {
			t.Helper()
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(body)
		}
		const landing = "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"
		if st, body := send(landing); st != 200 {
			t.Fatalf("before the change: %d %q, want 200", st, body)
		}
		tighten(e)
		if st, body := send(landing); st != 403 || body != envoy.DeniedBody {
			t.Fatalf("same connection after the change: %d %q, want 403 %q", st, body, envoy.DeniedBody)
		}
		if st, body := send("PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"); st != 200 {
			t.Errorf("newly allowed request on the same connection: %d %q, want 200", st, body)
		}
	})
	t.Run("h2c", func(t *testing.T) {
		e := newEnv(t)
		var dials atomic.Int32
		target := e.listener()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: tiefighterIP.AsSlice()}}
		client := &http.Client{Transport: &http2.Transport{
			AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
				dials.Add(1)
				return d.DialContext(ctx, "tcp", target)
			},
		}}
		post := func() int {
			t.Helper()
			req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://deathstar/v1/request-landing", strings.NewReader("x"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.ProtoMajor != 2 {
				t.Fatalf("protocol %s, want HTTP/2", resp.Proto)
			}
			return resp.StatusCode
		}
		if st := post(); st != 200 {
			t.Fatalf("before the change: %d, want 200", st)
		}
		tighten(e)
		if st := post(); st != 403 {
			t.Errorf("same connection after the change: %d, want 403", st)
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("%d connections, want both requests on one", n)
		}
	})
	t.Run("filter chain gone", func(t *testing.T) {
		e := newEnv(t)
		c := e.dial(tiefighterIP)
		br := bufio.NewReader(c)
		const landing = "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n"
		if _, err := io.WriteString(c, landing); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("before the change: %d, want 200", resp.StatusCode)
		}
		// L7 policy moves from the deathstar to the tiefighter: the
		// listener stays, the deathstar's chain goes.
		plan := starwarsPlan(e.upstream.Port())
		plan.Endpoints[1].Ingress = plan.Endpoints[0].Ingress
		plan.Endpoints[0].Ingress = policy.DirectionPlan{}
		e.setPlan(plan)
		e.waitACK()
		if len(e.proxy.ListenerAddrs(envoy.ListenerName(policy.Ingress, envoy.DefaultIngressHTTPPort))) == 0 {
			t.Fatal("test premise: the ingress listener should stay")
		}
		if _, err := io.WriteString(c, landing); err != nil {
			t.Fatal(err)
		}
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("same connection without a chain: %d, want 403", resp.StatusCode)
		}
		expectClosed(t, br, "after the 403")
		e.flows.waitFor(t, "two flows per request", func(fs []flow.Flow) bool { return len(fs) >= 4 })
		if d := e.flows.entry("/v1/request-landing").GetResponse().GetResponseCodeDetails(); d != "filter_chain_not_found" {
			t.Errorf("access log details %q, want filter_chain_not_found", d)
		}
	})
}
