package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/moatnet/moat/policy/fqdn"
)

// compile_fqdn.go owns the addresses the DNS proxy learned for names that
// toFQDNs selectors select, and their identities.
//
// A learned address gets the node-local identity of its class: the set of
// toFQDNs selectors that select one of its names, and the longest policy
// prefix (toCIDR or except) that contains it, if any. The identity matches
// every toFQDNs selector of the set and every CIDR selector that the
// prefix's own identity (or world, without a prefix) matches, so learning an
// address never takes it out of a toCIDR allow or deny. Addresses of one
// class share an identity, so the identity count is bounded by the
// selectors and prefixes in force, not by the addresses (a name with 1,000
// rotating addresses costs one identity). An address of a local endpoint or
// of the node keeps that identity.

// learnedState is the Compiler's learned-address state.
type learnedState struct {
	names map[string]map[netip.Addr]struct{} // normal-form name -> addresses
	ips   map[netip.Addr]*learnedIP
	byKey map[string]*learnedID
	byID  map[ID]*learnedID
	// matchers caches one matcher per selector in force.
	matchers map[FQDNSelector]*fqdn.Matcher
	// all: every address's class must be recomputed (selectors or prefixes
	// changed); pending: only these.
	all     bool
	pending map[netip.Addr]struct{}
	// sels caches the selectors in force, sorted (nil: stale).
	sels []FQDNSelector
	// hints are the class numbers the pinned maps gave addresses
	// (AdoptLearned), used by the first Plan's new classes.
	hints map[netip.Addr]ID
}

type learnedIP struct {
	names map[string]struct{}
	id    *learnedID // nil: no selector selects any of its names
}

type learnedID struct {
	key  string
	info *idInfo
	refs int
	// planned: a Plan carried it (with its policy entries), so an
	// address may join it with one ipcache write (compile_fqdn_delta.go).
	planned bool
}

func (c *Compiler) learned() *learnedState {
	if c.fq == nil {
		c.fq = &learnedState{
			names:    map[string]map[netip.Addr]struct{}{},
			ips:      map[netip.Addr]*learnedIP{},
			byKey:    map[string]*learnedID{},
			byID:     map[ID]*learnedID{},
			matchers: map[FQDNSelector]*fqdn.Matcher{},
			pending:  map[netip.Addr]struct{}{},
		}
	}
	return c.fq
}

// LearnFQDN records that name resolved to ips (the DNS proxy calls it, through
// its owner, before it releases the answer). The next Plan puts every address
// that a toFQDNs selector selects (through this name or another one it was
// learned for) into the ipcache with its class identity. Learning the same
// pair again changes nothing.
func (c *Compiler) LearnFQDN(name string, ips []netip.Addr) {
	s := c.learned()
	name = fqdn.Normalize(name)
	set := s.names[name]
	if set == nil {
		set = map[netip.Addr]struct{}{}
		s.names[name] = set
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		if !ip.IsValid() {
			continue
		}
		if _, ok := set[ip]; ok {
			continue
		}
		set[ip] = struct{}{}
		l := s.ips[ip]
		if l == nil {
			l = &learnedIP{names: map[string]struct{}{}}
			s.ips[ip] = l
		}
		l.names[name] = struct{}{}
		s.pending[ip] = struct{}{}
	}
}

// ForgetFQDN drops the pairs (name, ip) (the DNS cache expired or evicted
// them). An address left with no name leaves the ipcache at the next Plan,
// and an identity left with no address is released (quarantined until the
// Plan that dropped it is confirmed applied).
func (c *Compiler) ForgetFQDN(name string, ips []netip.Addr) {
	s := c.learned()
	name = fqdn.Normalize(name)
	set := s.names[name]
	for _, ip := range ips {
		ip = ip.Unmap()
		if _, ok := set[ip]; !ok {
			continue
		}
		delete(set, ip)
		if l := s.ips[ip]; l != nil {
			delete(l.names, name)
			s.pending[ip] = struct{}{}
		}
	}
	if len(set) == 0 {
		delete(s.names, name)
	}
}

// LearnedFQDNs returns how many addresses are learned and how many class
// identities they use.
func (c *Compiler) LearnedFQDNs() (ips, identities int) {
	if c.fq == nil {
		return 0, 0
	}
	return len(c.fq.ips), len(c.fq.byID)
}

// syncLearned recomputes the classes of the addresses that need it; part of
// sync, after renumberLocals and before the recomputations (a new class
// identity is a new remote for the identities whose policy selects it).
func (c *Compiler) syncLearned(localsChanged bool) {
	s := c.fq
	if s == nil {
		return
	}
	if localsChanged {
		s.all = true
		s.sels = nil
		// Drop matchers of selectors no longer in force.
		for f := range s.matchers {
			if _, ok := c.fqdnIDs[f]; !ok {
				delete(s.matchers, f)
			}
		}
	}
	if !s.all && len(s.pending) == 0 {
		return
	}
	sels := s.sortedSelectors(c)
	visit := func(ip netip.Addr) {
		l := s.ips[ip]
		if l == nil {
			return
		}
		var key string
		var set []FQDNSelector
		var pf netip.Prefix
		if len(l.names) > 0 {
			set = c.selectorsOfNames(l.names, sels)
		}
		if len(set) > 0 {
			pf = c.longestPolicyPrefix(ip)
			key = learnedKey(set, pf)
		}
		old := l.id
		if old != nil && old.key == key {
			return
		}
		if key != "" {
			id := s.byKey[key]
			if id == nil {
				if h, ok := s.hints[ip]; ok {
					c.localAlloc.Rename(LocalFQDN, pinnedKey(h), key)
				}
				id = c.newLearnedID(key, set, pf)
			}
			if id == nil {
				key = "" // no number free: the address stays out of the ipcache
			} else {
				id.refs++
				l.id = id
			}
		}
		if key == "" {
			l.id = nil
		}
		if old != nil {
			c.releaseLearnedID(old)
		}
		if old == nil || l.id == nil {
			c.ipcacheDirty = true // the set of prefixes changed
		} else {
			c.ipcPatch = append(c.ipcPatch, netip.PrefixFrom(ip, ip.BitLen()))
		}
		if len(l.names) == 0 {
			delete(s.ips, ip)
		}
	}
	if s.all {
		ips := make([]netip.Addr, 0, len(s.ips))
		for ip := range s.ips {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, netip.Addr.Compare)
		for _, ip := range ips {
			visit(ip)
		}
	} else {
		ips := make([]netip.Addr, 0, len(s.pending))
		for ip := range s.pending {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, netip.Addr.Compare)
		for _, ip := range ips {
			visit(ip)
		}
	}
	s.all = false
	clear(s.pending)
	s.hints = nil // only the first Plan after a restart uses them
}

// selectorsOfNames returns the selectors in force (sels, sorted) that
// select one of names.
func (c *Compiler) selectorsOfNames(names map[string]struct{}, sels []FQDNSelector) []FQDNSelector {
	s := c.fq
	var out []FQDNSelector
	for _, f := range sels {
		m := s.matchers[f]
		if m == nil {
			var ns, ps []string
			if f.MatchName != "" {
				ns = []string{f.MatchName}
			}
			if f.MatchPattern != "" {
				ps = []string{f.MatchPattern}
			}
			var err error
			if m, err = fqdn.NewMatcher(ns, ps); err != nil {
				// An invalid selector selects nothing (as in trace).
				m, _ = fqdn.NewMatcher(nil, nil)
			}
			s.matchers[f] = m
		}
		for n := range names {
			if m.Match(n) {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// longestPolicyPrefix returns the longest prefix of the policies in force
// (CIDR rules and excepts) that contains ip; invalid when none does.
func (c *Compiler) longestPolicyPrefix(ip netip.Addr) netip.Prefix {
	var best netip.Prefix
	for pf := range c.cidrIDs {
		if pf.Contains(ip) && (!best.IsValid() || pf.Bits() > best.Bits()) {
			best = pf
		}
	}
	return best
}

func learnedKey(set []FQDNSelector, pf netip.Prefix) string {
	var b strings.Builder
	b.WriteString("learned:")
	for i, f := range set {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(fqdnLocalKey(f))
	}
	if pf.IsValid() {
		b.WriteString("|cidr=")
		b.WriteString(pf.String())
	}
	return b.String()
}

// newLearnedID takes a number for a new class; nil when none is free.
func (c *Compiler) newLearnedID(key string, set []FQDNSelector, pf netip.Prefix) *learnedID {
	num, err := c.localAlloc.Acquire(LocalFQDN, key)
	if err != nil {
		c.stats.LocalAllocFailures++
		return nil
	}
	labels := Labels{}
	for _, f := range set {
		k, v := "matchName", f.MatchName
		if f.MatchName == "" {
			k, v = "matchPattern", f.MatchPattern
		}
		labels[k+"="+v] = Label{Source: SourceFQDN, Key: k, Value: v}
	}
	if pf.IsValid() {
		labels[pf.String()] = Label{Source: SourceCIDR, Key: pf.String()}
	}
	info := &idInfo{id: num, kind: idKindFQDN, learned: true, fqdnSet: set, prefix: pf, labels: labels}
	id := &learnedID{key: key, info: info}
	c.fq.byKey[key] = id
	c.fq.byID[num] = id
	c.cache.addIdentity(info)
	c.identities = nil
	return id
}

func (c *Compiler) releaseLearnedID(id *learnedID) {
	if id.refs--; id.refs > 0 {
		return
	}
	delete(c.fq.byKey, id.key)
	delete(c.fq.byID, id.info.id)
	c.cache.removeIdentity(id.info.id)
	_ = c.localAlloc.Release(LocalFQDN, id.key, c.gen)
	c.identities = nil
}

// learnedValue is the ipcache identity of a learned address.
func (c *Compiler) learnedValue(ip netip.Addr) (ID, bool) {
	if c.fq == nil {
		return 0, false
	}
	if l := c.fq.ips[ip]; l != nil && l.id != nil {
		return l.id.info.id, true
	}
	return 0, false
}

// addLearnedPrefixes adds the learned addresses that have an identity to
// the ipcache's prefix set.
func (c *Compiler) addLearnedPrefixes(set map[netip.Prefix]struct{}) {
	if c.fq == nil {
		return
	}
	for ip, l := range c.fq.ips {
		if l.id != nil {
			set[netip.PrefixFrom(ip, ip.BitLen())] = struct{}{}
		}
	}
}

// learnedMatchesCIDR is a CIDR selection's verdict on a learned class: what
// it decides for the class's prefix identity, or for world without one.
func learnedMatchesCIDR(e *selEntry, info *idInfo) bool {
	if !info.prefix.IsValid() {
		return e.cidr.Prefix.Bits() == 0
	}
	if !prefixCovers(e.cidr.Prefix, info.prefix) {
		return false
	}
	for _, ex := range e.cidr.Except {
		if prefixCovers(ex, info.prefix) {
			return false
		}
	}
	return true
}

// learnedIdentities appends the class identities.
func (c *Compiler) learnedIdentities(out []Identity) []Identity {
	if c.fq == nil {
		return out
	}
	for id, l := range c.fq.byID {
		out = append(out, Identity{ID: id, Labels: l.info.labels})
	}
	return out
}
