package agent

import (
	"net/netip"
	"testing"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/policy"
)

// dns_test.go tests the agent's DNS wiring with the fake maps of
// reconcile_test.go: the DNS redirect port, and learning written to the
// maps before learnFQDN returns.

const dnsPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*.example.com"}]}}]
  - toFQDNs: [{matchName: api.example.com}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

func TestDNSWiring(t *testing.T) {
	h := newOrderHarness(t, 0)
	h.a.cfg.DNSProxyPort = 15053
	p, err := dnsproxy.New(dnsproxy.Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints:         dnsproxy.EndpointsFunc(func(netip.Addr) (dnsproxy.EndpointInfo, bool) { return dnsproxy.EndpointInfo{}, false }),
		Remotes:           dnsproxy.RemotesFunc(func(netip.Addr) policy.ID { return policy.IDWorld }),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.a.dns = &dnsState{proxy: p}
	h.a.dns.view.Store(&dnsView{})
	dnsKey := datapath.ProxyKey{Direction: policy.Egress, L7: policy.L7DNS}

	// Listeners not up: the DNS redirect has no port (fails closed).
	if err := h.apply(t, dnsPolicy); err != nil {
		t.Fatal(err)
	}
	evs, _ := h.r.snapshot()
	if port, ok := lastSync(evs).ports[dnsKey]; ok {
		t.Fatalf("DNS redirect port %d written before the listeners were up", port)
	}
	// Up: the next write carries the port.
	h.a.dns.up.Store(true)
	if err := h.a.reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	evs, _ = h.r.snapshot()
	if port := lastSync(evs).ports[dnsKey]; port != 15053 {
		t.Fatalf("DNS redirect port %d, want 15053", port)
	}
	// The lookups see the Plan's endpoints.
	if ep, ok := h.a.dns.view.Load().endpoints[netip.MustParseAddr("10.1.0.2")]; !ok || ep.Name != "client" {
		t.Fatalf("endpoint lookup of 10.1.0.2: %+v, %v", ep, ok)
	}

	// Learning writes the maps before it returns.
	ip := netip.MustParseAddr("192.0.2.1")
	n := len(evs)
	if err := h.a.learnFQDN(t.Context(), "api.example.com.", []netip.Addr{ip}, nil); err != nil {
		t.Fatal(err)
	}
	evs, _ = h.r.snapshot()
	if len(evs) != n+1 || !isSync(evs[n]) {
		t.Fatalf("learnFQDN: events %s; want one sync", formatEvents(evs[n:]))
	}
	id, ok := evs[n].locals["192.0.2.1/32"]
	if !ok || !id.IsLocal() {
		t.Fatalf("learnFQDN synced without 192.0.2.1/32 as a local identity: %v", evs[n].locals)
	}
	if evs[n].ports[dnsKey] != 15053 {
		t.Fatalf("learnFQDN's sync dropped the DNS redirect port: %v", evs[n].ports)
	}
	// The same answer again: already in the maps, no write.
	if err := h.a.learnFQDN(t.Context(), "api.example.com.", []netip.Addr{ip}, nil); err != nil {
		t.Fatal(err)
	}
	if evs2, _ := h.r.snapshot(); len(evs2) != n+1 {
		t.Fatalf("a repeated answer wrote the maps again: %s", formatEvents(evs2[n+1:]))
	}
	// A second address of the same class: one ipcache entry, no sync.
	ip2 := netip.MustParseAddr("192.0.2.2")
	if err := h.a.learnFQDN(t.Context(), "api.example.com.", []netip.Addr{ip2}, nil); err != nil {
		t.Fatal(err)
	}
	evs, _ = h.r.snapshot()
	if len(evs) != n+2 || evs[n+1].kind != "patch-ipcache" || evs[n+1].name != "+1-0" {
		t.Fatalf("learning a known class's address: events %s; want one ipcache patch of one entry", formatEvents(evs[n:]))
	}
	// Forgetting one of the two: a patch that deletes it.
	h.a.forgetFQDN("api.example.com.", []netip.Addr{ip2})
	evs, _ = h.r.snapshot()
	if len(evs) != n+3 || evs[n+2].kind != "patch-ipcache" || evs[n+2].name != "+0-1" {
		t.Fatalf("forgetting one of a class's addresses: events %s; want one ipcache patch deleting one", formatEvents(evs[n:]))
	}
	// Forgetting the last one releases the class: no write until the
	// refresh, which syncs a Plan without it.
	h.a.forgetFQDN("api.example.com.", []netip.Addr{ip})
	if evs, _ = h.r.snapshot(); len(evs) != n+3 {
		t.Fatalf("forgetting a class's last address wrote at once: %s", formatEvents(evs[n+3:]))
	}
	if err := h.a.refreshNow(); err != nil {
		t.Fatal(err)
	}
	evs, _ = h.r.snapshot()
	if _, ok := lastSync(evs).locals["192.0.2.1/32"]; ok || len(evs) != n+4 || !isSync(evs[n+3]) {
		t.Fatalf("after forgetFQDN and a refresh: events %s", formatEvents(evs[n:]))
	}
	// An address of a name no selector selects never reaches the maps.
	if err := h.a.learnFQDN(t.Context(), "www.example.com.", []netip.Addr{netip.MustParseAddr("192.0.2.9")}, nil); err != nil {
		t.Fatal(err)
	}
	evs, _ = h.r.snapshot()
	if _, ok := lastSync(evs).locals["192.0.2.9/32"]; ok {
		t.Fatal("an unselected name's address was written to the ipcache")
	}
}
