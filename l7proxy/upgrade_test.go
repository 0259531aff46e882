package l7proxy_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// allowOnly makes the deathstar allow exactly method path to org=empire.
func (e *env) allowOnly(method, path string) {
	e.t.Helper()
	plan := starwarsPlan(e.upstream.Port())
	plan.Endpoints[0].Ingress.HTTP[0].Rules[0].Rule = &policy.HTTPRule{Method: method, Path: path}
	e.setPlan(plan)
	e.waitACK()
}

// TestUpgradeRefused: no accepted connection manager has upgrade_configs,
// so an upgrade request gets Envoy's 403 upgrade_failed, never reaches the
// upstream, and its connection closes (no tunnel, not even after the reply).
func TestUpgradeRefused(t *testing.T) {
	e := newEnv(t)
	e.allowOnly("GET", "/public")
	tests := []struct {
		name    string
		marker  string // query that identifies the request upstream
		headers string
		// then, on the same connection, bytes a tunnel would carry
		trailing   string
		wantStatus int
		wantBody   string
		wantDetail string // response code details in the access log
		wantClosed bool
		wantSeen   bool   // the upstream got the request
		wantUpHdr  string // Upgrade header the upstream saw
	}{
		{"raw upgrade on allowed path", "raw", "Upgrade: raw\r\nConnection: upgrade\r\n",
			"GET /private?m=tunnel-raw HTTP/1.1\r\nHost: deathstar\r\n\r\n",
			403, envoy.DeniedBody, "upgrade_failed", true, false, ""},
		{"websocket upgrade", "ws", "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
			"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
			403, envoy.DeniedBody, "upgrade_failed", true, false, ""},
		{"upgrade with two headers", "two", "Upgrade: h2c\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n", "",
			403, envoy.DeniedBody, "upgrade_failed", true, false, ""},
		{"h2c upgrade served as HTTP/1.1", "h2c", "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n", "",
			200, "GET /public?m=h2c", "via_upstream", false, true, ""},
		{"upgrade header without connection token is dropped", "notoken", "Upgrade: raw\r\n", "",
			200, "GET /public?m=notoken", "via_upstream", false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial(tiefighterIP)
			req := "GET /public?m=" + tt.marker + " HTTP/1.1\r\nHost: deathstar\r\n" + tt.headers + "\r\n" + tt.trailing
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || string(body) != tt.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
			if tt.wantClosed {
				// Nothing more: no tunnelled reply, the connection closes.
				_ = c.SetReadDeadline(time.Now().Add(waitTimeout))
				expectClosed(t, br, "after the refusal")
			}
			seen := e.seen.find("m=" + tt.marker)
			if got := len(seen) > 0; got != tt.wantSeen {
				t.Fatalf("upstream saw %v, want seen=%v", seen, tt.wantSeen)
			}
			if tt.wantSeen && seen[0].upgrade != tt.wantUpHdr {
				t.Errorf("upstream saw Upgrade %q, want %q", seen[0].upgrade, tt.wantUpHdr)
			}
			if s := e.seen.find("tunnel"); len(s) > 0 {
				t.Errorf("tunnelled bytes reached the upstream: %v", s)
			}
			path := "/public?m=" + tt.marker
			e.flows.waitFor(t, "flows of "+path, func(fs []flow.Flow) bool { return e.flows.entry(path) != nil })
			if d := e.flows.entry(path).GetResponse().GetResponseCodeDetails(); d != tt.wantDetail {
				t.Errorf("access log details %q, want %q", d, tt.wantDetail)
			}
		})
	}
}

// TestUpstreamSwitchRefused: a back end answering 101 to a plain request
// gets no tunnel: the client gets 503 as for a protocol error.
func TestUpstreamSwitchRefused(t *testing.T) {
	e := newEnv(t)
	e.allowOnly("GET", "/public")
	c := e.dial(tiefighterIP)
	if _, err := io.WriteString(c, "GET /public?m=switch HTTP/1.1\r\nHost: deathstar\r\nX-Test-Switch: 1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "protocol error") {
		t.Fatalf("got %d %q, want 503 protocol error", resp.StatusCode, body)
	}
	// No tunnel: whatever the client sends next never gets an echo, the
	// connection closes (a FIN, or a RST when the proxy closed with the
	// client's "ping" unread).
	_, _ = io.WriteString(c, "ping")
	expectClosed(t, br, "after the 503")
}

// TestNACKUpgradeConfigs: upgrade_configs, on the connection manager or on
// a route, is refused until the proxy supports upgrades.
func TestNACKUpgradeConfigs(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(t *testing.T, byType map[string][]types.Resource) string // returns the resource type
		wantDetail string
	}{
		{"connection manager", func(t *testing.T, byType map[string][]types.Resource) string {
			l := byType[resource.ListenerType][0].(*listenerv3.Listener)
			f := l.GetFilterChains()[0].GetFilters()[0]
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			hcm.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			a, err := anypb.New(hcm)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			return resource.ListenerType
		}, "unsupported field upgrade_configs"},
		{"route", func(t *testing.T, byType map[string][]types.Resource) string {
			rc := byType[resource.RouteType][0].(*routev3.RouteConfiguration)
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if a := r.GetRoute(); a != nil {
						a.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "websocket"}}
						return resource.RouteType
					}
				}
			}
			t.Fatal("no route action to mutate")
			return ""
		}, "unsupported field upgrade_configs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			res, err := envoy.Translate(starwarsPlan(e.upstream.Port()), e.ecfg)
			if err != nil {
				t.Fatal(err)
			}
			byType := res.ByType()
			typ := tt.mutate(t, byType)
			v := "v-upgrade"
			if err := e.xds.SetResources(t.Context(), node, v, byType); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			err = e.xds.WaitForACK(ctx, node, v, typ)
			var nack *xds.NACKError
			if !errors.As(err, &nack) {
				t.Fatalf("WaitForACK = %v, want a NACK", err)
			}
			if !strings.Contains(nack.Detail, tt.wantDetail) {
				t.Errorf("NACK detail %q, want it to contain %q", nack.Detail, tt.wantDetail)
			}
		})
	}
}

// expectClosed reads once and wants the connection closed: a FIN, or a RST
// when the proxy closed with bytes from the client still unread.
func expectClosed(t *testing.T, br *bufio.Reader, when string) {
	t.Helper()
	if n, err := br.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("%s: read %d bytes, %v; want the connection closed", when, n, err)
	}
}
