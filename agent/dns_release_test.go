package agent

import (
	"net/netip"
	"testing"
	"time"

	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/policy"
)

type fakeLive map[netip.Addr]struct{}

func (f fakeLive) ConntrackAddrs(addrs map[netip.Addr]struct{}) (map[netip.Addr]struct{}, error) {
	out := map[netip.Addr]struct{}{}
	for a := range addrs {
		if _, ok := f[a]; ok {
			out[a] = struct{}{}
		}
	}
	return out, nil
}

// TestDNSReleaseKeepsLiveAddresses: of the addresses the cache released,
// one a tracked flow uses stays learned (and is released once the flow is
// gone), one the cache learned again stays, the others are forgotten.
func TestDNSReleaseKeepsLiveAddresses(t *testing.T) {
	h := newOrderHarness(t, 0)
	cache := dnsproxy.NewCache(dnsproxy.CacheConfig{})
	p, err := dnsproxy.New(dnsproxy.Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints:         dnsproxy.EndpointsFunc(func(netip.Addr) (dnsproxy.EndpointInfo, bool) { return dnsproxy.EndpointInfo{}, false }),
		Remotes:           dnsproxy.RemotesFunc(func(netip.Addr) policy.ID { return policy.IDWorld }),
		Cache:             cache,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.a.dns = &dnsState{proxy: p, releases: newReleases()}
	h.a.dns.view.Store(&dnsView{})
	h.a.dns.up.Store(true)
	if err := h.apply(t, dnsPolicy); err != nil {
		t.Fatal(err)
	}
	used, idle, again := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	keep := netip.MustParseAddr("192.0.2.4") // keeps the class alive
	all := []netip.Addr{used, idle, again, keep}
	if err := h.a.learnFQDN(t.Context(), "api.example.com.", all, nil); err != nil {
		t.Fatal(err)
	}
	live := fakeLive{used: {}}
	h.a.live = live
	cache.Learn("api.example.com.", []dnsproxy.Learned{{IP: again, TTL: time.Hour}})
	h.a.dns.releases.add("api.example.com.", []netip.Addr{used, idle, again})
	h.a.releaseNow()
	if err := h.a.refreshNow(); err != nil {
		t.Fatal(err)
	}
	ipc := func() map[netip.Prefix]policy.ID {
		h.a.mu.RLock()
		defer h.a.mu.RUnlock()
		return learnedIPCacheOf(h.a.state.plan)
	}
	host := func(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }
	got := ipc()
	for _, a := range []netip.Addr{used, again, keep} {
		if _, ok := got[host(a)]; !ok {
			t.Errorf("%s left the ipcache; want it kept", a)
		}
	}
	if _, ok := got[host(idle)]; ok {
		t.Errorf("%s (released, unused) is still in the ipcache", idle)
	}
	// The flow ends: the next sweep releases it.
	delete(live, used)
	h.a.releaseNow()
	if err := h.a.refreshNow(); err != nil {
		t.Fatal(err)
	}
	if _, ok := ipc()[host(used)]; ok {
		t.Errorf("%s is still in the ipcache after its flow ended", used)
	}
}

func learnedIPCacheOf(p *policy.Plan) map[netip.Prefix]policy.ID {
	out := map[netip.Prefix]policy.ID{}
	if p == nil {
		return out
	}
	for _, e := range p.IPCache {
		out[e.Prefix] = e.Identity
	}
	return out
}
