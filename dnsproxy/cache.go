package dnsproxy

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policy/fqdn"
)

// cache.go owns the FQDN cache: which addresses the answers for selected
// names carried, until when, and when they were last seen. The cache only
// ever holds what the proxy learned from a validated answer for a name a
// toFQDNs selector selects; names are kept in normal form (lower case,
// trailing dot), so lookups are case-insensitive.

// InUse reports whether a live connection uses ip (the agent answers from
// conntrack). The cache never forgets such an address, neither by expiry
// nor by the per-name cap. Safe for concurrent use; it is called with the
// cache locked, so it must be quick and must not call the cache.
type InUse interface {
	InUse(ip netip.Addr) bool
}

// InUseFunc adapts a function to InUse.
type InUseFunc func(ip netip.Addr) bool

// InUse implements InUse.
func (f InUseFunc) InUse(ip netip.Addr) bool { return f(ip) }

// LearnFunc runs before an answer that carries addresses of selected names
// is released: the agent allocates the addresses' local identities and
// writes the ipcache. selectors are the toFQDNs selections that select
// name. ctx ends at the hold bound; the answer is released then whatever
// the function does.
type LearnFunc func(ctx context.Context, name string, ips []netip.Addr, selectors []policy.FQDNSelection) error

// ReleaseFunc receives addresses the cache forgot for name, so their
// identities and ipcache entries can be released.
type ReleaseFunc func(name string, ips []netip.Addr)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// MinTTL raises shorter TTLs (default 0: the answer's TTL).
	MinTTL time.Duration
	// MaxIPsPerName caps the addresses kept per name (default 64). Past
	// it the least recently seen addresses that no live connection uses
	// are evicted; the addresses of the answer being learned never are.
	MaxIPsPerName int
	// InUse protects addresses of live connections; nil means none.
	InUse InUse
	// OnRelease receives forgotten addresses; nil means nobody cares.
	OnRelease ReleaseFunc
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultMaxIPsPerName is CacheConfig.MaxIPsPerName's default.
const DefaultMaxIPsPerName = 64

// Cache maps names to the addresses answers gave them. Safe for concurrent
// use.
type Cache struct {
	cfg   CacheConfig
	mu    sync.Mutex
	names map[string]*nameEntry
	// nIPs counts the addresses of every name (for the size metric,
	// without a walk per answer).
	nIPs int
	// observer is told about sizes and evictions (metrics); may be nil.
	observer cacheObserver
}

type cacheObserver interface {
	cacheSize(names, ips int)
	cacheEvicted(reason string, n int)
}

type nameEntry struct {
	ips map[netip.Addr]*ipEntry
}

type ipEntry struct {
	expires  time.Time
	lastSeen time.Time
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig) *Cache {
	if cfg.MaxIPsPerName <= 0 {
		cfg.MaxIPsPerName = DefaultMaxIPsPerName
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Cache{cfg: cfg, names: map[string]*nameEntry{}}
}

// Learned is one address of an answer with its TTL.
type Learned struct {
	IP  netip.Addr
	TTL time.Duration
}

// Learn records that name resolved to ips now. Each address's expiry moves
// to now+max(TTL, MinTTL) if that is later than what it had. When the name
// then holds more than MaxIPsPerName addresses, the least recently seen
// ones are evicted, skipping addresses in use and those of this answer.
func (c *Cache) Learn(name string, ips []Learned) {
	name = fqdn.Normalize(name)
	now := c.cfg.Now()
	var evicted []netip.Addr
	c.mu.Lock()
	e := c.names[name]
	if e == nil {
		e = &nameEntry{ips: map[netip.Addr]*ipEntry{}}
		c.names[name] = e
	}
	fresh := make(map[netip.Addr]bool, len(ips))
	for _, l := range ips {
		ip := l.IP.Unmap()
		ttl := max(l.TTL, c.cfg.MinTTL)
		exp := now.Add(ttl)
		fresh[ip] = true
		if ie := e.ips[ip]; ie != nil {
			ie.lastSeen = now
			if exp.After(ie.expires) {
				ie.expires = exp
			}
			continue
		}
		e.ips[ip] = &ipEntry{expires: exp, lastSeen: now}
		c.nIPs++
	}
	if over := len(e.ips) - c.cfg.MaxIPsPerName; over > 0 {
		type cand struct {
			ip   netip.Addr
			seen time.Time
		}
		var cands []cand
		for ip, ie := range e.ips {
			if !fresh[ip] {
				cands = append(cands, cand{ip, ie.lastSeen})
			}
		}
		sort.Slice(cands, func(i, j int) bool {
			if !cands[i].seen.Equal(cands[j].seen) {
				return cands[i].seen.Before(cands[j].seen)
			}
			return cands[i].ip.Less(cands[j].ip)
		})
		for _, cd := range cands {
			if over == 0 {
				break
			}
			if c.inUse(cd.ip) {
				continue
			}
			delete(e.ips, cd.ip)
			c.nIPs--
			evicted = append(evicted, cd.ip)
			over--
		}
	}
	c.reportLocked()
	c.mu.Unlock()
	if len(evicted) > 0 {
		c.released(name, evicted, "cap")
	}
}

func (c *Cache) inUse(ip netip.Addr) bool {
	return c.cfg.InUse != nil && c.cfg.InUse.InUse(ip)
}

func (c *Cache) released(name string, ips []netip.Addr, reason string) {
	slices.SortFunc(ips, netip.Addr.Compare)
	if c.observer != nil {
		c.observer.cacheEvicted(reason, len(ips))
	}
	if c.cfg.OnRelease != nil {
		c.cfg.OnRelease(name, ips)
	}
}

// reportLocked tells the observer the sizes. Caller holds c.mu.
func (c *Cache) reportLocked() {
	if c.observer != nil {
		c.observer.cacheSize(len(c.names), c.nIPs)
	}
}

// Lookup returns the unexpired addresses of name (any case), sorted; none
// (nil) when the name was never learned or all its addresses expired.
func (c *Cache) Lookup(name string) []netip.Addr {
	name = fqdn.Normalize(name)
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.names[name]
	if e == nil {
		return nil
	}
	var out []netip.Addr
	for ip, ie := range e.ips {
		if ie.expires.After(now) {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// LookupSelector returns the addresses of every cached name sel selects,
// sorted and unique, including addresses kept past expiry because a live
// connection uses them. A selector nothing has been learned for yet returns
// none (nil): valid, and allowing nothing.
func (c *Cache) LookupSelector(sel policy.FQDNSelector) []netip.Addr {
	var names, patterns []string
	if sel.MatchName != "" {
		names = []string{sel.MatchName}
	}
	if sel.MatchPattern != "" {
		patterns = []string{sel.MatchPattern}
	}
	m, err := fqdn.NewMatcher(names, patterns)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for name, e := range c.names {
		if !m.Match(name) {
			continue
		}
		for ip := range e.ips {
			if !seen[ip] {
				seen[ip] = true
				out = append(out, ip)
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// CacheEntry is one (name, address) of the cache, for `moat fqdn cache`
// and the state file.
type CacheEntry struct {
	Name     string     `json:"name"`
	IP       netip.Addr `json:"ip"`
	Expires  time.Time  `json:"expires"`
	LastSeen time.Time  `json:"lastSeen"`
}

// Entries returns every entry, sorted by name then address.
func (c *Cache) Entries() []CacheEntry {
	c.mu.Lock()
	var out []CacheEntry
	for name, e := range c.names {
		for ip, ie := range e.ips {
			out = append(out, CacheEntry{Name: name, IP: ip, Expires: ie.expires, LastSeen: ie.lastSeen})
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b CacheEntry) int {
		if r := strings.Compare(a.Name, b.Name); r != 0 {
			return r
		}
		return a.IP.Compare(b.IP)
	})
	return out
}

// Collect forgets the addresses whose expiry has passed, except those a
// live connection uses (kept until it closes and a later Collect runs), and
// names left with no address. Forgotten addresses go to OnRelease. It
// returns how many addresses were forgotten. The agent calls it
// periodically (Proxy.Run does, every CollectInterval).
func (c *Cache) Collect() int {
	now := c.cfg.Now()
	gone := map[string][]netip.Addr{}
	n := 0
	c.mu.Lock()
	for name, e := range c.names {
		for ip, ie := range e.ips {
			if ie.expires.After(now) || c.inUse(ip) {
				continue
			}
			delete(e.ips, ip)
			c.nIPs--
			gone[name] = append(gone[name], ip)
			n++
		}
		if len(e.ips) == 0 {
			delete(c.names, name)
		}
	}
	c.reportLocked()
	c.mu.Unlock()
	names := make([]string, 0, len(gone))
	for name := range gone {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c.released(name, gone[name], "expired")
	}
	return n
}

// Flush forgets every name pattern selects (all names when pattern is
// "*" or empty), in-use addresses included, and returns how many addresses
// went (`moat fqdn flush`).
func (c *Cache) Flush(pattern string) (int, error) {
	var m *fqdn.Matcher
	if pattern != "" && pattern != "*" {
		var err error
		if m, err = fqdn.NewMatcher(nil, []string{pattern}); err != nil {
			return 0, err
		}
	}
	gone := map[string][]netip.Addr{}
	n := 0
	c.mu.Lock()
	for name, e := range c.names {
		if m != nil && !m.Match(name) {
			continue
		}
		for ip := range e.ips {
			gone[name] = append(gone[name], ip)
			n++
		}
		c.nIPs -= len(e.ips)
		delete(c.names, name)
	}
	c.reportLocked()
	c.mu.Unlock()
	for name, ips := range gone {
		c.released(name, ips, "flush")
	}
	return n, nil
}

// restore adds saved entries: those unexpired, or in use. Returns the
// restored addresses per name.
func (c *Cache) restore(entries []CacheEntry) map[string][]netip.Addr {
	now := c.cfg.Now()
	out := map[string][]netip.Addr{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, en := range entries {
		ip := en.IP.Unmap()
		if !en.Expires.After(now) && !c.inUse(ip) {
			continue
		}
		name := fqdn.Normalize(en.Name)
		e := c.names[name]
		if e == nil {
			e = &nameEntry{ips: map[netip.Addr]*ipEntry{}}
			c.names[name] = e
		}
		if old := e.ips[ip]; old != nil {
			if en.Expires.After(old.expires) {
				old.expires = en.Expires
			}
			continue
		}
		e.ips[ip] = &ipEntry{expires: en.Expires, lastSeen: en.LastSeen}
		c.nIPs++
		out[name] = append(out[name], ip)
	}
	c.reportLocked()
	return out
}
