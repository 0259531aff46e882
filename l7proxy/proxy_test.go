package l7proxy_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
)

func TestStarWars(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name       string
		src        netip.Addr
		method     string
		path       string
		header     http.Header
		wantStatus int
		wantBody   string
		wantLoc    string
	}{
		{"empire may request landing", tiefighterIP, "POST", "/v1/request-landing", nil, 200, "POST /v1/request-landing", ""},
		{"query passes to upstream", tiefighterIP, "POST", "/v1/request-landing?ship=tie", nil, 200, "POST /v1/request-landing?ship=tie", ""},
		{"exhaust port denied", tiefighterIP, "PUT", "/v1/exhaust-port", nil, 403, envoy.DeniedBody, ""},
		{"wrong method denied", tiefighterIP, "GET", "/v1/request-landing", nil, 403, envoy.DeniedBody, ""},
		{"alliance denied", xwingIP, "POST", "/v1/request-landing", nil, 403, envoy.DeniedBody, ""},
		{"unknown source denied", netip.MustParseAddr("127.0.0.99"), "POST", "/v1/request-landing", nil, 403, envoy.DeniedBody, ""},
		{"dot-dot to exhaust port denied", tiefighterIP, "POST", "/v1/request-landing/../exhaust-port", nil, 403, envoy.DeniedBody, ""},
		{"dot-dot to landing normalised", tiefighterIP, "POST", "/v1/x/../request-landing", nil, 200, "POST /v1/request-landing", ""},
		{"double slash merged", tiefighterIP, "POST", "/v1//request-landing", nil, 200, "POST /v1/request-landing", ""},
		{"escaped slash rejected (strict paths)", tiefighterIP, "POST", "/v1%2Frequest-landing", nil, 400, "Bad Request", ""},
		{"prefix is not a match", tiefighterIP, "POST", "/v1/request-landing/x", nil, 403, envoy.DeniedBody, ""},
		{"underscore header rejected", tiefighterIP, "POST", "/v1/request-landing", http.Header{"X_Token": {"a"}}, 400, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, "http://deathstar"+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Keep the target exactly as written.
			req.URL.Opaque = strings.SplitN(tt.path, "?", 2)[0]
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := e.client(tt.src).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
			if loc := resp.Header.Get("Location"); loc != tt.wantLoc {
				t.Errorf("Location %q, want %q", loc, tt.wantLoc)
			}
		})
	}
}

func TestSmuggling(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		req  string
		want int
	}{
		{"both transfer-encoding and content-length",
			"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"duplicate content-length",
			"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
		{"conflicting content-length",
			"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", 400},
		{"absolute-form target",
			"POST http://deathstar/v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n", 400},
		{"leading double slash merged",
			"POST //v1//request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n", 200},
		{"plain request passes",
			"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 1\r\n\r\nx", 200},
		{"chunked request passes",
			"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.raw(tiefighterIP, tt.req)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tt.want)
			}
		})
	}
}

func TestAccessLog(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		method, path string
	}{{"POST", "/v1/request-landing"}, {"PUT", "/v1/exhaust-port"}} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, "http://deathstar"+tc.path, nil)
		req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		resp, err := e.client(tiefighterIP).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	fs := e.flows.waitFor(t, "4 flows", func(fs []flow.Flow) bool { return len(fs) >= 4 })
	byURL := map[string][]flow.Flow{}
	for _, f := range fs {
		byURL[f.L7.HTTP.URL] = append(byURL[f.L7.HTTP.URL], f)
	}
	tests := []struct {
		name, url   string
		wantVerdict flow.Verdict
		wantCode    uint32
	}{
		{"allowed", "http://deathstar/v1/request-landing", flow.Forwarded, 200},
		{"denied", "http://deathstar/v1/exhaust-port", flow.Dropped, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := byURL[tt.url]
			if len(got) != 2 {
				t.Fatalf("%d flows for %s, want request and response; all: %v", len(got), tt.url, fs)
			}
			req, resp := got[0], got[1]
			if req.Verdict != tt.wantVerdict {
				t.Errorf("request verdict %v, want %v", req.Verdict, tt.wantVerdict)
			}
			if resp.L7.HTTP.Code != tt.wantCode {
				t.Errorf("response code %d, want %d", resp.L7.HTTP.Code, tt.wantCode)
			}
			if req.TrafficDirection != flow.Ingress {
				t.Errorf("direction %v, want ingress", req.TrafficDirection)
			}
			if req.Source.IP != tiefighterIP || req.Destination.IP != deathstarIP {
				t.Errorf("source %v destination %v, want %v → %v", req.Source.IP, req.Destination.IP, tiefighterIP, deathstarIP)
			}
		})
	}
}

// TestKeepAliveFraming sends several requests with different framings on
// one connection: the frame guard must find every head.
func TestKeepAliveFraming(t *testing.T) {
	e := newEnv(t)
	reqs := "POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n" +
		"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 5\r\n\r\nhello" +
		"PUT /v1/exhaust-port HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 0\r\n\r\n" +
		"POST /v1/request-landing HTTP/1.1\r\nHost: deathstar\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	c := e.dial(tiefighterIP)
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	expectStatuses(t, bufio.NewReader(c), 200, 200, 403, 400)
}

// expectStatuses reads one response per wanted status from br, in order
// (pipelined requests are answered in the order they were sent).
func expectStatuses(t *testing.T, br *bufio.Reader, want ...int) {
	t.Helper()
	for i, w := range want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != w {
			t.Errorf("response %d: status %d, want %d", i, resp.StatusCode, w)
		}
	}
}

// TestKeepAliveManyRequests reuses one connection for many requests: net/http
// aborts its background reads with deadlines between them, which the frame
// guard must not turn into a closed connection.
func TestKeepAliveManyRequests(t *testing.T) {
	e := newEnv(t)
	c := e.client(tiefighterIP)
	conns := 0
	tr := c.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) {
		conns++
		return dial(ctx, n, a)
	}
	for i := range 50 {
		resp, err := c.Post("http://deathstar/v1/request-landing", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	if conns != 1 {
		t.Errorf("%d connections for 50 keep-alive requests, want 1", conns)
	}
}
