package dnsproxy

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
)

// TestCacheFlushFunc: a flush forgets exactly the names the predicate
// picks, in-use addresses included, hands their addresses to OnRelease,
// and leaves the others (and Lookup) alone; a name flushed and learned
// again is back.
func TestCacheFlushFunc(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var rel releases
	inUse := ip("198.18.0.2")
	c := NewCache(CacheConfig{Now: clk.Now, OnRelease: rel.fn, InUse: InUseFunc(func(a netip.Addr) bool { return a == inUse })})
	c.Learn("API.example.com", learned(time.Minute, "198.18.0.1", "198.18.0.2"))
	c.Learn("www.example.com.", learned(time.Minute, "198.18.0.3"))
	c.Learn("www.example.org.", learned(time.Minute, "198.18.0.4"))

	got := c.FlushFunc(func(name string) bool { return strings.HasSuffix(name, ".example.com.") })
	want := []FlushedName{
		{Name: "api.example.com.", IPs: []netip.Addr{ip("198.18.0.1"), ip("198.18.0.2")}},
		{Name: "www.example.com.", IPs: []netip.Addr{ip("198.18.0.3")}},
	}
	if !slices.EqualFunc(got, want, func(a, b FlushedName) bool { return a.Name == b.Name && slices.Equal(a.IPs, b.IPs) }) {
		t.Fatalf("FlushFunc = %+v, want %+v", got, want)
	}
	if len(rel.got) != 2 || len(rel.got["api.example.com."]) != 2 || len(rel.got["www.example.com."]) != 1 {
		t.Fatalf("released %v; want both example.com names with their addresses (in-use one too)", rel.got)
	}
	if ips := c.Lookup("api.example.com"); ips != nil {
		t.Fatalf("Lookup after flush = %v, want none", ips)
	}
	if ips := c.Lookup("www.example.org"); len(ips) != 1 {
		t.Fatalf("unflushed name lost: %v", ips)
	}
	if n := len(c.Entries()); n != 1 {
		t.Fatalf("%d entries left, want 1", n)
	}
	// Nothing matches: nothing happens.
	if got := c.FlushFunc(func(string) bool { return false }); got != nil {
		t.Fatalf("FlushFunc(none) = %v", got)
	}
	c.Learn("api.example.com", learned(time.Minute, "198.18.0.9"))
	if ips := c.Lookup("api.example.com"); len(ips) != 1 || ips[0] != ip("198.18.0.9") {
		t.Fatalf("relearned = %v", ips)
	}
}

// TestProxyFlushFuncCompacts: flushed names do not come back from the
// journal when the state is opened again (as after a restart).
func TestProxyFlushFuncCompacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dnsproxy.json")
	s, _, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{
		Listen:            []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		StaticDestination: netip.MustParseAddrPort("127.0.0.1:53"),
		Endpoints:         EndpointsFunc(func(netip.Addr) (EndpointInfo, bool) { return EndpointInfo{}, false }),
		Remotes:           RemotesFunc(func(netip.Addr) policy.ID { return policy.IDWorld }),
		Store:             s,
	})
	if err != nil {
		t.Fatal(err)
	}
	keep, gone := storeEntry("keep.example.com.", 1), storeEntry("gone.example.com.", 2)
	if err := s.Append([]CacheEntry{keep, gone}); err != nil {
		t.Fatal(err)
	}
	p.cache.Learn(keep.Name, []Learned{{IP: keep.IP, TTL: time.Hour}})
	p.cache.Learn(gone.Name, []Learned{{IP: gone.IP, TTL: time.Hour}})
	got, err := p.FlushFunc(func(name string) bool { return name == "gone.example.com." })
	if err != nil || len(got) != 1 || got[0].Name != "gone.example.com." {
		t.Fatalf("FlushFunc = %+v, %v", got, err)
	}
	s.Close()
	s2, st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if keys := cacheKeys(st.Cache); !slices.Equal(keys, []string{"keep.example.com. 192.0.2.1"}) {
		t.Fatalf("state after the flush: %v; want only keep.example.com.", keys)
	}
}
