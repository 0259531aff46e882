package dnsproxy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
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
