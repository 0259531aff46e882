package l7proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkProxyRequest compares keep-alive requests through the proxy
// (RBAC allow, upstream on loopback) with requests straight to the
// upstream; the ratio is the proxy's cost.
func BenchmarkProxyRequest(b *testing.B) {
	e := newEnv(b)
	run := func(b *testing.B, target string) float64 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: tiefighterIP.AsSlice()}}
		c := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return d.DialContext(ctx, "tcp", target)
			},
			MaxIdleConnsPerHost: 1,
		}}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "http://deathstar/v1/request-landing", nil)
		start := time.Now()
		for b.Loop() {
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		rps := float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rps, "req/s")
		return rps
	}
	var direct, proxied float64
	b.Run("direct", func(b *testing.B) { direct = run(b, netip.AddrPortFrom(deathstarIP, e.upstream.Port()).String()) })
	b.Run("proxy", func(b *testing.B) {
		proxied = run(b, e.listener())
		if direct > 0 {
			b.ReportMetric(proxied/direct, "ratio")
		}
	})
}
