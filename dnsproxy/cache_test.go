package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/policy"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func learned(ttl time.Duration, ips ...string) []Learned {
	var out []Learned
	for _, s := range ips {
		out = append(out, Learned{IP: ip(s), TTL: ttl})
	}
	return out
}

type releases struct {
	mu  sync.Mutex
	got map[string][]netip.Addr
}

func (r *releases) fn(name string, ips []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string][]netip.Addr{}
	}
	r.got[name] = append(r.got[name], ips...)
}

func TestCacheTTLAndCase(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var rel releases
	c := NewCache(CacheConfig{Now: clk.Now, MinTTL: 10 * time.Second, OnRelease: rel.fn})
	c.Learn("WWW.Example.COM", learned(2*time.Second, "192.0.2.1"))
	c.Learn("www.example.com.", learned(60*time.Second, "192.0.2.2"))
	if got := c.Lookup("www.EXAMPLE.com."); !slices.Equal(got, []netip.Addr{ip("192.0.2.1"), ip("192.0.2.2")}) {
		t.Fatalf("lookup = %v, want both addresses whatever the case", got)
	}
	if got := c.Lookup("other.example.com"); got != nil {
		t.Errorf("never-learned name → %v, want nil", got)
	}
	// The 2 s TTL was raised to the 10 s minimum.
	clk.Advance(9 * time.Second)
	if got := c.Lookup("www.example.com"); len(got) != 2 {
		t.Errorf("after 9s: %v, want both (MinTTL 10s)", got)
	}
	clk.Advance(2 * time.Second)
	if got := c.Lookup("www.example.com"); !slices.Equal(got, []netip.Addr{ip("192.0.2.2")}) {
		t.Errorf("after 11s: %v, want only the 60s address", got)
	}
	if n := c.Collect(); n != 1 {
		t.Errorf("Collect forgot %d, want 1", n)
	}
	if !slices.Equal(rel.got["www.example.com."], []netip.Addr{ip("192.0.2.1")}) {
		t.Errorf("released %v, want 192.0.2.1 for www.example.com.", rel.got)
	}
	// A later answer with a shorter TTL never shortens an expiry.
	c.Learn("www.example.com", learned(time.Second, "192.0.2.2"))
	clk.Advance(40 * time.Second)
	if got := c.Lookup("www.example.com"); len(got) != 1 {
		t.Errorf("re-learned with a short TTL: %v, want the address kept to its 60s expiry", got)
	}
	clk.Advance(20 * time.Second)
	c.Collect()
	if got := c.Entries(); len(got) != 0 {
		t.Errorf("after all expired: entries %v, want none (name gone too)", got)
	}
}

func TestCacheCapEvictsLeastRecentlySeenNotInUse(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	inUse := map[netip.Addr]bool{ip("10.0.0.1"): true}
	var rel releases
	c := NewCache(CacheConfig{Now: clk.Now, MaxIPsPerName: 4, OnRelease: rel.fn,
		InUse: InUseFunc(func(a netip.Addr) bool { return inUse[a] })})
	// 10.0.0.1 (in use) is the oldest, then .2, .3, .4.
	for i := 1; i <= 4; i++ {
		c.Learn("rot.example", learned(time.Hour, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}).String()))
		clk.Advance(time.Second)
	}
	// Seen again: .2 becomes the most recent of the old ones.
	c.Learn("rot.example", learned(time.Hour, "10.0.0.2"))
	clk.Advance(time.Second)
	// An answer of two new addresses: two must go. Candidates by age: .1
	// (in use: kept), .3, .4, .2. So .3 and .4 go.
	c.Learn("rot.example", learned(time.Hour, "10.0.0.5", "10.0.0.6"))
	want := []netip.Addr{ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.5"), ip("10.0.0.6")}
	if got := c.Lookup("rot.example"); !slices.Equal(got, want) {
		t.Errorf("after cap: %v, want %v", got, want)
	}
	if got := rel.got["rot.example."]; !slices.Equal(got, []netip.Addr{ip("10.0.0.3"), ip("10.0.0.4")}) {
		t.Errorf("released %v, want 10.0.0.3 and 10.0.0.4", got)
	}
	// An answer larger than the cap is kept whole: its addresses are the
	// ones the client is about to use.
	c.Learn("rot.example", learned(time.Hour, "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4", "10.0.1.5"))
	got := c.Lookup("rot.example")
	if !slices.Contains(got, ip("10.0.0.1")) || len(got) != 6 {
		t.Errorf("oversized answer: %v, want its 5 addresses plus the in-use 10.0.0.1", got)
	}
}

func TestCacheCollectKeepsInUse(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	var mu sync.Mutex
	inUse := map[netip.Addr]bool{ip("192.0.2.7"): true}
	var rel releases
	c := NewCache(CacheConfig{Now: clk.Now, OnRelease: rel.fn, InUse: InUseFunc(func(a netip.Addr) bool {
		mu.Lock()
		defer mu.Unlock()
		return inUse[a]
	})})
	c.Learn("a.example", learned(5*time.Second, "192.0.2.7", "192.0.2.8"))
	clk.Advance(10 * time.Second)
	if n := c.Collect(); n != 1 {
		t.Fatalf("Collect forgot %d, want 1 (192.0.2.8; .7 is in use)", n)
	}
	if got := c.LookupSelector(policy.FQDNSelector{MatchPattern: "*.example"}); !slices.Equal(got, []netip.Addr{ip("192.0.2.7")}) {
		t.Errorf("selector after collect: %v, want the in-use address kept", got)
	}
	mu.Lock()
	inUse = nil
	mu.Unlock()
	if n := c.Collect(); n != 1 {
		t.Errorf("second Collect forgot %d, want 1", n)
	}
	if got := rel.got["a.example."]; !slices.Equal(got, []netip.Addr{ip("192.0.2.8"), ip("192.0.2.7")}) {
		t.Errorf("released %v, want .8 then .7", got)
	}
}

func TestCacheSelectorWithoutIPs(t *testing.T) {
	c := NewCache(CacheConfig{})
	sel := policy.FQDNSelector{MatchName: "api.github.com"}
	if got := c.LookupSelector(sel); got != nil {
		t.Fatalf("selector with nothing learned: %v, want nil", got)
	}
	c.Learn("www.github.com", learned(time.Minute, "192.0.2.1"))
	if got := c.LookupSelector(sel); got != nil {
		t.Errorf("selector after an unrelated name: %v, want nil", got)
	}
	c.Learn("API.GitHub.com.", learned(time.Minute, "192.0.2.2"))
	if got := c.LookupSelector(sel); !slices.Equal(got, []netip.Addr{ip("192.0.2.2")}) {
		t.Errorf("selector after learning: %v, want [192.0.2.2]", got)
	}
	if got := c.LookupSelector(policy.FQDNSelector{MatchPattern: "*.github.com"}); len(got) != 2 {
		t.Errorf("pattern selector: %v, want both", got)
	}
	n, err := c.Flush("*.github.com")
	if err != nil || n != 2 || len(c.Entries()) != 0 {
		t.Errorf("Flush = %d, %v; entries left %v", n, err, c.Entries())
	}
}

// TestHoldBeforeRelease: the addresses of a selected name are in the
// (fake) ipcache before the client sees the answer.
func TestHoldBeforeRelease(t *testing.T) {
	var mu sync.Mutex
	ipcache := map[netip.Addr]policy.ID{}
	h := newHarness(t, func(c *Config) {
		c.OnLearn = func(_ context.Context, name string, ips []netip.Addr, sels []policy.FQDNSelection) error {
			time.Sleep(2 * time.Millisecond) // an agent that takes a while
			mu.Lock()
			defer mu.Unlock()
			for _, a := range ips {
				ipcache[a] = sels[0].Identity
			}
			return nil
		}
	})
	for i := range 20 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		name := fmt.Sprintf("n%d.allowed.test.", i)
		h.up.setZone(name, []string{a.String()})
		r := h.exchange("udp", mkQuery(name, dns.TypeA))
		if len(r.Answer) != 1 {
			t.Fatalf("%s: %d answers", name, len(r.Answer))
		}
		mu.Lock()
		id, ok := ipcache[a]
		mu.Unlock()
		if !ok || id != 16777217 {
			t.Fatalf("%s: client got the answer before %s was in the ipcache (identity %d, %v)", name, a, id, ok)
		}
	}
	if n := histogramCount(t, h.reg, "moat_dnsproxy_hold_seconds"); n != 20 {
		t.Errorf("hold histogram has %d samples, want 20", n)
	}
}

func TestHoldBounded(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	h := newHarness(t, func(c *Config) {
		c.HoldTimeout = 50 * time.Millisecond
		c.OnLearn = func(context.Context, string, []netip.Addr, []policy.FQDNSelection) error {
			<-block // ignores its context: the proxy must release anyway
			return nil
		}
	})
	h.up.setZone("stuck.allowed.test.", []string{"192.0.2.9"})
	start := time.Now()
	r := h.exchange("udp", mkQuery("stuck.allowed.test.", dns.TypeA))
	if len(r.Answer) != 1 {
		t.Fatalf("answer has %d records, want it released after the hold bound", len(r.Answer))
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("released after %s, before the hold bound", d)
	}
	if v := h.rejected(ReasonHoldTimeout, resultReleased); v != 1 {
		t.Errorf("rejected{hold_timeout} = %v, want 1", v)
	}
	// A failing hook releases too, counted separately.
	h2 := newHarness(t, func(c *Config) {
		c.OnLearn = func(context.Context, string, []netip.Addr, []policy.FQDNSelection) error {
			return errors.New("ipcache full")
		}
	})
	h2.up.setZone("err.allowed.test.", []string{"192.0.2.9"})
	if r := h2.exchange("udp", mkQuery("err.allowed.test.", dns.TypeA)); len(r.Answer) != 1 {
		t.Errorf("answer has %d records after a learn error, want it released", len(r.Answer))
	}
	if v := h2.rejected(ReasonLearnError, resultReleased); v != 1 {
		t.Errorf("rejected{learn_error} = %v, want 1", v)
	}
}

type sizeObserver struct{ names, ips int }

func (o *sizeObserver) cacheSize(names, ips int) { o.names, o.ips = names, ips }
func (o *sizeObserver) cacheEvicted(string, int) {}

// TestCacheSizeCount: the address count the cache reports (kept as it
// changes, not recounted) is the number of entries after any mix of
// learning, evictions, expiry, flushes and restores.
func TestCacheSizeCount(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := NewCache(CacheConfig{MaxIPsPerName: 5, Now: func() time.Time { return now }})
	obs := &sizeObserver{}
	c.observer = obs
	rng := rand.New(rand.NewPCG(3, 4))
	check := func(op string) {
		t.Helper()
		es := c.Entries()
		names := map[string]bool{}
		for _, e := range es {
			names[e.Name] = true
		}
		if obs.ips != len(es) || obs.names != len(c.names) {
			t.Fatalf("after %s: reported %d names / %d addresses, the cache holds %d / %d", op, obs.names, obs.ips, len(c.names), len(es))
		}
	}
	for i := range 2000 {
		name := fmt.Sprintf("n%d.example.com", rng.IntN(6))
		switch rng.IntN(10) {
		case 0:
			now = now.Add(time.Duration(rng.IntN(30)) * time.Second)
			c.Collect()
			check("collect")
		case 1:
			if _, err := c.Flush(name); err != nil {
				t.Fatal(err)
			}
			check("flush")
		case 2:
			c.FlushFunc(func(n string) bool { return n == name+"." })
			check("flush func")
		case 3:
			c.restore([]CacheEntry{{Name: name, IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(20))}), Expires: now.Add(time.Minute)}})
			check("restore")
		default:
			var ls []Learned
			for range 1 + rng.IntN(3) {
				ls = append(ls, Learned{IP: netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(20))}), TTL: time.Duration(1+rng.IntN(20)) * time.Second})
			}
			c.Learn(name, ls)
			check(fmt.Sprintf("learn %d", i))
		}
	}
}
