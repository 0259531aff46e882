package dnsproxy

import (
	"fmt"
	"net/netip"
	"slices"
)

// cache_flush.go owns flushing by predicate (`moat fqdn flush --name
// --endpoint`): the agent decides which names go, the cache forgets them
// through the same release path as expiry, so OnRelease runs and the
// addresses' identities and ipcache entries are released.

// FlushedName is one name a flush forgot, with its addresses.
type FlushedName struct {
	Name string       `json:"name"`
	IPs  []netip.Addr `json:"ips"`
}

// FlushFunc forgets every cached name for which match reports true (names
// are in normal form: lower case, trailing dot), addresses of live
// connections included, so that the next query for the name is learned
// afresh. OnRelease receives each name's addresses before FlushFunc
// returns. The result is sorted by name.
func (c *Cache) FlushFunc(match func(name string) bool) []FlushedName {
	var out []FlushedName
	c.mu.Lock()
	for name, e := range c.names {
		if !match(name) {
			continue
		}
		f := FlushedName{Name: name, IPs: make([]netip.Addr, 0, len(e.ips))}
		for ip := range e.ips {
			f.IPs = append(f.IPs, ip)
		}
		slices.SortFunc(f.IPs, netip.Addr.Compare)
		out = append(out, f)
		c.nIPs -= len(e.ips)
		delete(c.names, name)
	}
	c.reportLocked()
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b FlushedName) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for _, f := range out {
		if len(f.IPs) > 0 {
			c.released(f.Name, slices.Clone(f.IPs), "flush")
		}
	}
	return out
}

// FlushFunc forgets the cached names match picks (Cache.FlushFunc) and,
// like Flush, writes a snapshot at once so that a restart does not bring
// them back from the journal.
func (p *Proxy) FlushFunc(match func(name string) bool) ([]FlushedName, error) {
	out := p.cache.FlushFunc(match)
	if p.cfg.Store != nil && len(out) > 0 {
		if err := p.cfg.Store.Compact(p.State, true); err != nil {
			return out, fmt.Errorf("flush dns cache: %w", err)
		}
	}
	return out, nil
}
