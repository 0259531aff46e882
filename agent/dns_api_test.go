package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/policy"
)

// TestFQDNFlushAPI: POST /v1/fqdn/flush drops the selected cache entries
// through the cache's release path, so the learned address leaves the
// ipcache before the request returns; filters by name pattern and by the
// endpoint's DNS rules; bad input names what was wrong.
func TestFQDNFlushAPI(t *testing.T) {
	h := newOrderHarness(t, 0)
	h.a.cfg.DNSProxyPort = 15053
	p, err := dnsproxy.New(dnsproxy.Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints:         dnsproxy.EndpointsFunc(func(netip.Addr) (dnsproxy.EndpointInfo, bool) { return dnsproxy.EndpointInfo{}, false }),
		Remotes:           dnsproxy.RemotesFunc(func(netip.Addr) policy.ID { return policy.IDWorld }),
		OnRelease:         h.a.forgetFQDN,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.a.dns = &dnsState{proxy: p}
	h.a.dns.view.Store(&dnsView{})
	h.a.dns.up.Store(true)
	if err := h.apply(t, dnsPolicy); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.a.registerDNSFlushAPI(mux)
	post := func(query string) (*httptest.ResponseRecorder, FQDNFlush) {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/fqdn/flush"+query, nil))
		var out FQDNFlush
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("decode %s: %v", rec.Body, err)
			}
		}
		return rec, out
	}
	learn := func() {
		t.Helper()
		ip := netip.MustParseAddr("192.0.2.1")
		if err := h.a.learnFQDN(t.Context(), "api.example.com.", []netip.Addr{ip}, nil); err != nil {
			t.Fatal(err)
		}
		p.Cache().Learn("api.example.com.", []dnsproxy.Learned{{IP: ip, TTL: time.Hour}})
		p.Cache().Learn("other.test.", []dnsproxy.Learned{{IP: netip.MustParseAddr("192.0.2.7"), TTL: time.Hour}})
		evs, _ := h.r.snapshot()
		if _, ok := lastSync(evs).locals["192.0.2.1/32"]; !ok {
			t.Fatal("setup: 192.0.2.1 not learned into the ipcache")
		}
	}
	learn()

	for query, want := range map[string]int{
		"?name=a..b":              http.StatusBadRequest,
		"?endpoint=default/nope":  http.StatusNotFound,
		"?endpoint=/x":            http.StatusBadRequest,
		"?name=*.nothing.example": http.StatusOK,
	} {
		if rec, _ := post(query); rec.Code != want {
			t.Errorf("%s: %d %s; want %d", query, rec.Code, rec.Body, want)
		}
	}
	// The endpoint's rules (*.example.com) select api.example.com, not
	// other.test.
	rec, out := post("?endpoint=default/client")
	if rec.Code != http.StatusOK || out.Addresses != 1 || len(out.Names) != 1 || out.Names[0].Name != "api.example.com." {
		t.Fatalf("flush --endpoint default/client: %d %s", rec.Code, rec.Body)
	}
	evs, _ := h.r.snapshot()
	if _, ok := lastSync(evs).locals["192.0.2.1/32"]; ok {
		t.Fatal("after the flush 192.0.2.1 is still in the ipcache")
	}
	if got := p.Cache().Lookup("other.test"); len(got) != 1 {
		t.Fatalf("other.test flushed too: %v", got)
	}
	// Relearn, then flush by name; then everything.
	learn()
	if rec, out := post("?name=api.example.com"); rec.Code != http.StatusOK || out.Addresses != 1 {
		t.Fatalf("flush --name api.example.com: %d %s", rec.Code, rec.Body)
	}
	if rec, out := post(""); rec.Code != http.StatusOK || out.Addresses != 1 || out.Names[0].Name != "other.test." {
		t.Fatalf("flush all: %d %s", rec.Code, rec.Body)
	}
	if n := len(p.Cache().Entries()); n != 0 {
		t.Fatalf("%d entries after flushing all", n)
	}
}
