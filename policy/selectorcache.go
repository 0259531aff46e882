package policy

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// selectorcache.go keeps, for every distinct peer or subject selection in the
// loaded policies, the set of known identities it selects, and updates those
// sets as identities appear and disappear. Each change is reported to the
// identities whose compiled policy used the selection, so that only they are
// recomputed, and only for the remote identities that changed.

// idKind classifies an identity for selection purposes.
type idKind uint8

const (
	idKindReserved idKind = iota
	idKindLabels          // label-set identity of local endpoints
	idKindCIDR            // node-local CIDR identity
	idKindFQDN            // node-local FQDN identity
)

// idInfo is what the cache knows about one identity.
type idInfo struct {
	id     ID
	kind   idKind
	labels Labels
	prefix netip.Prefix // idKindCIDR
	fqdn   FQDNSelector // idKindFQDN
	// learned: a class of learned addresses (compile_fqdn.go) with the
	// selectors fqdnSet and the covering policy prefix in prefix.
	learned bool
	fqdnSet []FQDNSelector
}

// selKind is the kind of a cached selection.
type selKind uint8

const (
	selAny selKind = iota
	selLabels
	selEntity
	selCIDR
	selFQDN
)

// selEntry is one cached selection.
type selEntry struct {
	key        string
	kind       selKind
	sel        Selector // selLabels, normalized
	reservedOK bool     // the selector names a reserved label
	entity     Entity
	cidr       CIDRRule // masked, excepts sorted
	fqdn       FQDNSelector
	anchor     []string // "key=value" index keys; nil: evaluate on every identity

	members map[ID]struct{}
	sorted  []ID // members in order; rebuilt lazily (nil means stale)

	refs       int // holders: rules (as subject or peer)
	subjectOf  map[*compiledRule]struct{}
	dependents map[ID]struct{} // subject identities whose plan used it
}

// sortedMembers returns the members in ascending order.
func (e *selEntry) sortedMembers() []ID {
	if e.sorted == nil {
		e.sorted = make([]ID, 0, len(e.members))
		for id := range e.members {
			e.sorted = append(e.sorted, id)
		}
		sort.Slice(e.sorted, func(i, j int) bool { return e.sorted[i] < e.sorted[j] })
	}
	return e.sorted
}

// selCache is the selector cache of one Compiler.
type selCache struct {
	ids      map[ID]*idInfo
	byLabel  map[string]map[ID]struct{} // "key=value" -> label-set identities
	entries  map[string]*selEntry
	anchored map[string]map[*selEntry]struct{} // "key=value" -> entries anchored there
	floating map[*selEntry]struct{}            // entries without anchor
	memberOf map[ID]map[*selEntry]struct{}

	// onChange is called for every membership change.
	onChange func(e *selEntry, id ID)
}

func newSelCache(onChange func(e *selEntry, id ID)) *selCache {
	return &selCache{
		ids:      map[ID]*idInfo{},
		byLabel:  map[string]map[ID]struct{}{},
		entries:  map[string]*selEntry{},
		anchored: map[string]map[*selEntry]struct{}{},
		floating: map[*selEntry]struct{}{},
		memberOf: map[ID]map[*selEntry]struct{}{},
		onChange: onChange,
	}
}

func labelIndexKey(key, value string) string { return key + "=" + value }

// matches reports whether the entry selects the identity.
func (e *selEntry) matches(info *idInfo) bool {
	switch e.kind {
	case selAny:
		return false // IDAny is a fixed member, never a real identity
	case selLabels:
		switch info.kind {
		case idKindLabels:
			return e.sel.Matches(info.labels)
		case idKindReserved:
			return e.reservedOK && e.sel.Matches(info.labels)
		}
		return false
	case selEntity:
		switch e.entity {
		case EntityWorld:
			return info.id == IDWorld || info.kind == idKindCIDR || info.kind == idKindFQDN
		case EntityCluster:
			return info.kind == idKindLabels || info.id == IDHost || info.id == IDRemoteNode || info.id == IDKubeAPIServer
		case EntityHost:
			return info.id == IDHost
		case EntityRemoteNode:
			return info.id == IDRemoteNode
		case EntityKubeAPIServer:
			return info.id == IDKubeAPIServer
		}
		return false
	case selCIDR:
		if info.id == IDWorld {
			return e.cidr.Prefix.Bits() == 0
		}
		if info.learned {
			return learnedMatchesCIDR(e, info)
		}
		if info.kind != idKindCIDR {
			return false
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
	case selFQDN:
		if info.learned {
			return slices.Contains(info.fqdnSet, e.fqdn)
		}
		return info.kind == idKindFQDN && info.fqdn == e.fqdn
	}
	return false
}

// prefixCovers reports whether inner lies within outer.
func prefixCovers(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// acquire returns the entry for a selection, creating and filling it.
func (c *selCache) acquire(proto *selEntry) *selEntry {
	if e, ok := c.entries[proto.key]; ok {
		e.refs++
		return e
	}
	e := proto
	e.refs = 1
	e.members = map[ID]struct{}{}
	e.subjectOf = map[*compiledRule]struct{}{}
	e.dependents = map[ID]struct{}{}
	c.entries[e.key] = e
	if e.kind == selAny {
		e.members[IDAny] = struct{}{}
		c.addMemberOf(IDAny, e)
	}
	if e.kind == selLabels {
		e.anchor = selectorAnchor(e.sel)
	}
	if e.anchor != nil {
		for _, a := range e.anchor {
			m := c.anchored[a]
			if m == nil {
				m = map[*selEntry]struct{}{}
				c.anchored[a] = m
			}
			m[e] = struct{}{}
		}
		// Candidates: label-set identities carrying an anchor label, and
		// reserved ones when the selector may select them.
		for _, a := range e.anchor {
			for id := range c.byLabel[a] {
				c.consider(e, c.ids[id], false)
			}
		}
		if e.reservedOK {
			for _, info := range c.ids {
				if info.kind == idKindReserved {
					c.consider(e, info, false)
				}
			}
		}
	} else {
		c.floating[e] = struct{}{}
		for _, info := range c.ids {
			c.consider(e, info, false)
		}
	}
	return e
}

// consider adds the identity to the entry when it matches.
func (c *selCache) consider(e *selEntry, info *idInfo, notify bool) {
	if _, ok := e.members[info.id]; ok || !e.matches(info) {
		return
	}
	e.members[info.id] = struct{}{}
	e.sorted = nil
	c.addMemberOf(info.id, e)
	if notify {
		c.onChange(e, info.id)
	}
}

func (c *selCache) addMemberOf(id ID, e *selEntry) {
	m := c.memberOf[id]
	if m == nil {
		m = map[*selEntry]struct{}{}
		c.memberOf[id] = m
	}
	m[e] = struct{}{}
}

// release drops one reference; the entry goes when the last one does.
func (c *selCache) release(e *selEntry) {
	e.refs--
	if e.refs > 0 {
		return
	}
	delete(c.entries, e.key)
	if e.anchor != nil {
		for _, a := range e.anchor {
			delete(c.anchored[a], e)
			if len(c.anchored[a]) == 0 {
				delete(c.anchored, a)
			}
		}
	} else {
		delete(c.floating, e)
	}
	for id := range e.members {
		delete(c.memberOf[id], e)
		if len(c.memberOf[id]) == 0 {
			delete(c.memberOf, id)
		}
	}
}

// addIdentity makes an identity known and adds it to every selection that
// selects it, reporting each change.
func (c *selCache) addIdentity(info *idInfo) {
	c.ids[info.id] = info
	if info.kind == idKindLabels {
		for _, l := range info.labels {
			k := labelIndexKey(l.Key, l.Value)
			m := c.byLabel[k]
			if m == nil {
				m = map[ID]struct{}{}
				c.byLabel[k] = m
			}
			m[info.id] = struct{}{}
			for e := range c.anchored[k] {
				c.consider(e, info, true)
			}
		}
		for e := range c.floating {
			c.consider(e, info, true)
		}
		return
	}
	for _, e := range c.entries {
		c.consider(e, info, true)
	}
}

// removeIdentity forgets an identity, removing it from every selection.
func (c *selCache) removeIdentity(id ID) {
	info, ok := c.ids[id]
	if !ok {
		return
	}
	delete(c.ids, id)
	if info.kind == idKindLabels {
		for _, l := range info.labels {
			k := labelIndexKey(l.Key, l.Value)
			delete(c.byLabel[k], id)
			if len(c.byLabel[k]) == 0 {
				delete(c.byLabel, k)
			}
		}
	}
	for e := range c.memberOf[id] {
		delete(e.members, id)
		e.sorted = nil
		c.onChange(e, id)
	}
	delete(c.memberOf, id)
}

// selectorAnchor picks the index keys of a selector: the values of one In
// requirement (preferring one that is not about the namespace). An identity
// the selector matches carries one of them. Requirements of a specific
// source other than k8s/any cannot anchor (the index is over keys only, which
// is still correct: matching re-checks the source).
func selectorAnchor(s Selector) []string {
	var best *Requirement
	for i := range s.Requirements {
		r := &s.Requirements[i]
		if r.Operator != OpIn || len(r.Values) == 0 {
			continue
		}
		if best == nil || (best.Key == LabelNamespace && r.Key != LabelNamespace) {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	out := make([]string, len(best.Values))
	for i, v := range best.Values {
		out[i] = labelIndexKey(best.Key, v)
	}
	return out
}

// Selection prototypes. The key is canonical: equal selections share one
// entry.

func selProtoLabels(s Selector) *selEntry {
	n := s.Normalized()
	reserved := false
	for _, r := range n.Requirements {
		if r.Source == SourceReserved {
			reserved = true
		}
	}
	return &selEntry{key: "s:" + n.String(), kind: selLabels, sel: n, reservedOK: reserved}
}

func selProtoAny() *selEntry { return &selEntry{key: "any", kind: selAny} }

func selProtoEntity(en Entity) *selEntry {
	if en == EntityAll {
		return selProtoAny()
	}
	return &selEntry{key: "e:" + string(en), kind: selEntity, entity: en}
}

func selProtoCIDR(r CIDRRule) *selEntry {
	n := CIDRRule{Prefix: r.Prefix.Masked()}
	for _, ex := range r.Except {
		n.Except = append(n.Except, ex.Masked())
	}
	sortPrefixOrder(n.Except)
	var b strings.Builder
	b.WriteString("c:")
	b.WriteString(n.Prefix.String())
	for _, ex := range n.Except {
		b.WriteString(" -")
		b.WriteString(ex.String())
	}
	return &selEntry{key: b.String(), kind: selCIDR, cidr: n}
}

func selProtoFQDN(f FQDNSelector) *selEntry {
	n := normalizeFQDNSelector(f)
	return &selEntry{key: "f:" + n.MatchName + "|" + n.MatchPattern, kind: selFQDN, fqdn: n}
}

// normalizeFQDNSelector lower-cases the selector and drops a trailing dot:
// DNS names compare case-insensitively and are always fully qualified.
func normalizeFQDNSelector(f FQDNSelector) FQDNSelector {
	return FQDNSelector{
		MatchName:    strings.TrimSuffix(strings.ToLower(f.MatchName), "."),
		MatchPattern: strings.TrimSuffix(strings.ToLower(f.MatchPattern), "."),
	}
}

// comparePrefixOrder orders prefixes by family, address, then length.
func comparePrefixOrder(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortPrefixOrder(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool { return comparePrefixOrder(ps[i], ps[j]) < 0 })
}
