package policy

import "net/netip"

// compile_fqdn_delta.go is the DNS proxy's fast path: most answers only add
// addresses to a class whose identity the maps already hold (a name with
// rotating addresses, a second name for a known selector set), and those
// need one host entry in the ipcache, not a new Plan and a full map sync.

// IPCacheDelta is a change of host entries of the ipcache that needs no
// other map change: every identity in Put is already in the maps with its
// policy entries.
type IPCacheDelta struct {
	Put    []IPCacheEntry
	Delete []netip.Prefix
}

// Empty reports whether the delta changes nothing.
func (d IPCacheDelta) Empty() bool { return len(d.Put) == 0 && len(d.Delete) == 0 }

// LearnedDelta applies the learned addresses that LearnFQDN and ForgetFQDN
// left pending and whose change is only an ipcache host entry against the
// Plan of generation applied (the Plan the caller's maps hold): an address
// joins a class identity that Plan had, or leaves a class that keeps other
// addresses. It returns their ipcache change; the next Plan contains it.
// The others stay pending for the next Plan: an address that needs a new
// class identity, one that changes class, one whose class would be
// released. ok is false, and nothing is applied, unless applied is the
// Compiler's latest Plan and nothing but learned addresses changed since.
func (c *Compiler) LearnedDelta(applied uint64) (d IPCacheDelta, ok bool) {
	s := c.fq
	if s == nil || s.all || applied+1 != c.gen || !c.onlyLearnedPending() {
		return IPCacheDelta{}, false
	}
	leaving := map[*learnedID]int{}
	for ip := range s.pending {
		l := s.ips[ip]
		if l == nil {
			delete(s.pending, ip)
			continue
		}
		key := ""
		if len(l.names) > 0 {
			if set := c.selectorsOfNames(l.names, s.sortedSelectors(c)); len(set) > 0 {
				key = learnedKey(set, c.longestPolicyPrefix(ip))
			}
		}
		old := l.id
		pf := netip.PrefixFrom(ip, ip.BitLen())
		switch {
		case old == nil && key == "", old != nil && old.key == key:
			// No change for the maps.
		case old == nil:
			id := s.byKey[key]
			if id == nil || !id.planned {
				continue // a new class: the next Plan
			}
			id.refs++
			l.id = id
			if _, owned := c.ownerValue(ip); !owned {
				d.Put = append(d.Put, IPCacheEntry{Prefix: pf, Identity: id.info.id})
			}
			c.ipcacheFast = true
		case key == "":
			if leaving[old]+1 >= old.refs {
				continue // the class would go: the next Plan
			}
			leaving[old]++
			old.refs--
			l.id = nil
			if _, owned := c.ownerValue(ip); !owned {
				d.Delete = append(d.Delete, pf)
			}
			c.ipcacheFast = true
		default:
			continue // the address changes class: the next Plan
		}
		if len(l.names) == 0 {
			delete(s.ips, ip)
		}
		delete(s.pending, ip)
	}
	return d, true
}

// LearnedWaiting returns how many learned addresses wait for a Plan.
func (c *Compiler) LearnedWaiting() int {
	if c.fq == nil {
		return 0
	}
	if c.fq.all {
		return max(1, len(c.fq.ips))
	}
	return len(c.fq.pending)
}

// LearnedPending reports whether any of ips waits for a Plan (after
// LearnedDelta: it needs a new class identity or another change only a
// Plan makes).
func (c *Compiler) LearnedPending(ips []netip.Addr) bool {
	if c.fq == nil {
		return false
	}
	if c.fq.all {
		return len(ips) > 0
	}
	for _, ip := range ips {
		if _, ok := c.fq.pending[ip.Unmap()]; ok {
			return true
		}
	}
	return false
}

// onlyLearnedPending reports whether the Compiler has no pending work
// other than learned addresses (so its last Plan is current but for them).
func (c *Compiler) onlyLearnedPending() bool {
	return !c.localsDirty && len(c.fullDirty) == 0 && len(c.deltas) == 0 &&
		!c.ipcacheDirty && len(c.ipcPatch) == 0
}

// sortedSelectors returns the toFQDNs selectors in force, sorted (cached
// until the selectors change).
func (s *learnedState) sortedSelectors(c *Compiler) []FQDNSelector {
	if s.sels == nil {
		s.sels = make([]FQDNSelector, 0, len(c.fqdnIDs))
		for f := range c.fqdnIDs {
			s.sels = append(s.sels, f)
		}
		sortFQDNSelectors(s.sels)
	}
	return s.sels
}

// markLearnedPlanned records that the Plan being built carries every
// class identity there is (with its policy entries).
func (c *Compiler) markLearnedPlanned() {
	if c.fq == nil {
		return
	}
	for _, id := range c.fq.byID {
		id.planned = true
	}
}

// HostIdentity returns the identity of ip's host entry in the ipcache as
// the Compiler holds it now (learned addresses included, also those only
// LearnedDelta has written so far); false when ip has no host entry.
func (c *Compiler) HostIdentity(ip netip.Addr) (ID, bool) {
	ip = ip.Unmap()
	return c.ipcValue(netip.PrefixFrom(ip, ip.BitLen()))
}
