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
// left pending and returns their ipcache change, when that change is all
// that separates the next Plan from the one of generation applied (the Plan
// the caller's maps hold): the Compiler has no other pending work, applied
// is its latest Plan, no address needs a class identity that applied did
// not have, and no class identity is released. The next Plan contains the
// change. Otherwise it changes nothing and returns false: the caller takes
// a Plan.
func (c *Compiler) LearnedDelta(applied uint64) (IPCacheDelta, bool) {
	s := c.fq
	if s == nil || s.all || applied+1 != c.gen || !c.onlyLearnedPending() {
		return IPCacheDelta{}, false
	}
	type step struct {
		ip  netip.Addr
		l   *learnedIP
		id  *learnedID // the class the address joins; nil: it leaves old
		old *learnedID
	}
	steps := make([]step, 0, len(s.pending))
	leaving := map[*learnedID]int{}
	for ip := range s.pending {
		l := s.ips[ip]
		if l == nil {
			continue
		}
		key := ""
		var set []FQDNSelector
		if len(l.names) > 0 {
			set = c.selectorsOfNames(l.names, s.sortedSelectors(c))
		}
		if len(set) > 0 {
			key = learnedKey(set, c.longestPolicyPrefix(ip))
		}
		old := l.id
		switch {
		case old == nil && key == "", old != nil && old.key == key:
			steps = append(steps, step{ip: ip, l: l, old: old, id: old})
		case old == nil:
			id := s.byKey[key]
			if id == nil || !id.planned {
				return IPCacheDelta{}, false // a new class: a new Plan
			}
			steps = append(steps, step{ip: ip, l: l, id: id})
		case key == "":
			leaving[old]++
			if leaving[old] >= old.refs {
				return IPCacheDelta{}, false // the class goes: a new Plan
			}
			steps = append(steps, step{ip: ip, l: l, old: old})
		default:
			return IPCacheDelta{}, false // the address changes class
		}
	}
	var d IPCacheDelta
	for _, st := range steps {
		pf := netip.PrefixFrom(st.ip, st.ip.BitLen())
		_, owned := c.ownerValue(st.ip)
		switch {
		case st.id == st.old:
		case st.old == nil:
			st.id.refs++
			st.l.id = st.id
			if !owned {
				d.Put = append(d.Put, IPCacheEntry{Prefix: pf, Identity: st.id.info.id})
			}
			c.ipcacheFast = true
		default:
			st.old.refs--
			st.l.id = nil
			if !owned {
				d.Delete = append(d.Delete, pf)
			}
			c.ipcacheFast = true
		}
		if len(st.l.names) == 0 {
			delete(s.ips, st.ip)
		}
	}
	clear(s.pending)
	return d, true
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
