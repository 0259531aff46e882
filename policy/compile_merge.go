package policy

import (
	"slices"
	"sort"
)

// compile_merge.go computes the entries of one remote identity and the L7
// rule sets of one direction from a list of contributions.

// specRef is a port spec with the rule it came from.
type specRef struct {
	*portSpec
	ref *RuleRef
}

// hasMember reports whether any of the contribution's selections selects x.
func (c *contrib) hasMember(x ID) bool {
	for _, e := range c.peers {
		if _, ok := e.members[x]; ok {
			return true
		}
	}
	return false
}

// remotes returns the union of the contribution's selections, nil when it
// includes IDAny (every remote), and whether it selects anything at all.
func (c *contrib) remotes() ([]ID, bool) {
	if len(c.peers) == 1 {
		m := c.peers[0].sortedMembers()
		if len(m) == 0 {
			return nil, false
		}
		if m[0] == IDAny {
			return nil, true
		}
		return append([]ID(nil), m...), true
	}
	set := map[ID]struct{}{}
	for _, e := range c.peers {
		for id := range e.members {
			if id == IDAny {
				return nil, true
			}
			set[id] = struct{}{}
		}
	}
	if len(set) == 0 {
		return nil, false
	}
	out := make([]ID, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, true
}

// mergeRemote computes the entries for remote identity x.
func mergeRemote(contribs []*contrib, x ID) []Entry {
	var specs []specRef
	for _, c := range contribs {
		if !c.hasMember(x) {
			continue
		}
		for i := range c.specs {
			specs = append(specs, specRef{&c.specs[i], &c.ref})
		}
	}
	if len(specs) == 0 {
		return nil
	}
	sort.SliceStable(specs, func(i, j int) bool { return specs[i].proto < specs[j].proto })
	var out []Entry
	for i := 0; i < len(specs); {
		j := i
		for j < len(specs) && specs[j].proto == specs[i].proto {
			j++
		}
		out = appendProtoEntries(out, x, specs[i:j])
		i = j
	}
	return out
}

// appendProtoEntries merges the specs of one protocol into disjoint ranges,
// each with the highest verdict covering it.
func appendProtoEntries(out []Entry, x ID, specs []specRef) []Entry {
	proto := specs[0].proto
	// Boundaries: each range [from, to] contributes from and to+1.
	points := make([]int, 0, 2*len(specs))
	for _, s := range specs {
		points = append(points, int(s.from), int(s.to)+1)
	}
	sort.Ints(points)
	points = compileUniqInts(points)
	start := len(out)
	for k := 0; k+1 < len(points); k++ {
		from, to := uint16(points[k]), uint16(points[k+1]-1)
		var best Verdict
		var l7 L7Kind
		for _, s := range specs {
			if s.from > from || s.to < to {
				continue
			}
			if s.verdict > best {
				best, l7 = s.verdict, s.l7
			} else if s.verdict == best && s.l7 > l7 {
				l7 = s.l7
			}
		}
		if best == VerdictNone {
			continue // a gap between ranges
		}
		var refs []RuleRef
		for _, s := range specs {
			if s.from <= from && s.to >= to && s.verdict == best && s.l7 == l7 {
				refs = append(refs, *s.ref)
			}
		}
		refs = sortRuleRefs(refs)
		// Coalesce with the previous piece when it continues it unchanged.
		if n := len(out); n > start {
			prev := &out[n-1]
			if prev.Verdict == best && prev.L7 == l7 && int(prev.Ports.To)+1 == int(from) && slices.Equal(prev.DerivedFrom, refs) {
				prev.Ports.To = to
				continue
			}
		}
		out = append(out, Entry{
			L4Key:       L4Key{Identity: x, Proto: proto, Ports: PortRange{From: from, To: to}},
			Verdict:     best,
			L7:          l7,
			DerivedFrom: refs,
		})
	}
	for k := start; k < len(out); k++ {
		out[k].Ports = outputRange(proto, out[k].Ports)
	}
	return out
}

// outputRange turns an internal range into the Plan's form: every port is
// {0, 0}.
func outputRange(proto Protocol, r PortRange) PortRange {
	if proto.IsICMP() {
		return r
	}
	if r.From <= 1 && r.To == 65535 {
		return PortRange{}
	}
	return r
}

func compileUniqInts(s []int) []int {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func compareRuleRefs(a, b RuleRef) int {
	switch {
	case a.Policy != b.Policy:
		return compileCmpStr(a.Policy, b.Policy)
	case a.Source.File != b.Source.File:
		return compileCmpStr(a.Source.File, b.Source.File)
	case a.Source.Doc != b.Source.Doc:
		return a.Source.Doc - b.Source.Doc
	}
	return compileCmpStr(a.Path, b.Path)
}

func compileCmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sortRuleRefs sorts and de-duplicates refs in place.
func sortRuleRefs(refs []RuleRef) []RuleRef {
	if len(refs) <= 1 {
		return refs
	}
	slices.SortFunc(refs, compareRuleRefs)
	return slices.Compact(refs)
}

// l7Piece is one disjoint redirected range of a protocol with its rules.
type l7Piece struct {
	proto    Protocol
	from, to uint16
	http     []HTTPAllow
	dns      []DNSAllow
}

// l7RuleSets computes the HTTP or DNS rule sets of one direction. For every
// protocol, the ranges redirected to that proxy are cut at every boundary of
// a contributing spec, so that each piece has one rule list; adjacent
// pieces with equal lists are joined again. A plain allow overlapping a
// piece becomes an allow-everything rule for exactly its own remotes.
func l7RuleSets(contribs []*contrib, kind L7Kind) []l7Piece {
	type live struct {
		c       *contrib
		remotes []ID
	}
	var lives []live
	protos := map[Protocol]bool{}
	for _, c := range contribs {
		rem, ok := c.remotes()
		if !ok {
			continue
		}
		lives = append(lives, live{c, rem})
		for i := range c.specs {
			if c.specs[i].l7 == kind {
				protos[c.specs[i].proto] = true
			}
		}
	}
	if len(protos) == 0 {
		return nil
	}
	plist := make([]Protocol, 0, len(protos))
	for p := range protos {
		plist = append(plist, p)
	}
	sort.Slice(plist, func(i, j int) bool { return plist[i] < plist[j] })
	var out []l7Piece
	for _, proto := range plist {
		var points []int
		for _, l := range lives {
			for i := range l.c.specs {
				s := &l.c.specs[i]
				if (s.l7 == kind && s.proto == proto) || (s.l7 == L7None && s.verdict == VerdictAllow && (s.proto == proto || s.proto == ProtoAny)) {
					points = append(points, int(s.from), int(s.to)+1)
				}
			}
		}
		sort.Ints(points)
		points = compileUniqInts(points)
		start := len(out)
		for k := 0; k+1 < len(points); k++ {
			from, to := uint16(points[k]), uint16(points[k+1]-1)
			redirected := false
			for _, l := range lives {
				for i := range l.c.specs {
					s := &l.c.specs[i]
					if s.l7 == kind && s.covers(proto, from, to) && s.proto == proto {
						redirected = true
					}
				}
			}
			if !redirected {
				continue
			}
			p := l7Piece{proto: proto, from: from, to: to}
			for _, l := range lives {
				plainDone := false
				var seen []*portSpec
				for i := range l.c.specs {
					s := &l.c.specs[i]
					if !s.covers(proto, from, to) {
						continue
					}
					switch {
					case s.l7 == kind:
						if sameRules(seen, s) {
							continue
						}
						seen = append(seen, s)
						p.addRules(l.c, l.remotes, s)
					case s.l7 == L7None && s.verdict == VerdictAllow && !plainDone:
						plainDone = true
						if kind == L7HTTP {
							p.http = append(p.http, HTTPAllow{Remotes: l.remotes, From: l.c.ref})
						} else {
							p.dns = append(p.dns, DNSAllow{Remotes: l.remotes, From: l.c.ref})
						}
					}
				}
			}
			if n := len(out); n > start && int(out[n-1].to)+1 == int(from) && out[n-1].sameRules(&p) {
				out[n-1].to = to
				continue
			}
			out = append(out, p)
		}
	}
	return out
}

// sameRules reports whether a spec with the same rule list was seen.
func sameRules(seen []*portSpec, s *portSpec) bool {
	for _, o := range seen {
		if len(o.http) > 0 && len(s.http) > 0 && &o.http[0] == &s.http[0] {
			return true
		}
		if len(o.dns) > 0 && len(s.dns) > 0 && &o.dns[0] == &s.dns[0] {
			return true
		}
		if len(o.http) == 0 && len(s.http) == 0 && len(o.dns) == 0 && len(s.dns) == 0 && o.l7 == s.l7 {
			return true
		}
	}
	return false
}

func (p *l7Piece) addRules(c *contrib, remotes []ID, s *portSpec) {
	switch s.l7 {
	case L7HTTP:
		if len(s.http) == 0 {
			p.http = append(p.http, HTTPAllow{Remotes: remotes, From: c.ref})
		}
		for i := range s.http {
			p.http = append(p.http, HTTPAllow{Remotes: remotes, Rule: &s.http[i], From: c.ref})
		}
	case L7DNS:
		if len(s.dns) == 0 {
			p.dns = append(p.dns, DNSAllow{Remotes: remotes, From: c.ref})
		}
		for i := range s.dns {
			p.dns = append(p.dns, DNSAllow{Remotes: remotes, Rule: &s.dns[i], From: c.ref})
		}
	}
}

func (p *l7Piece) sameRules(o *l7Piece) bool {
	if len(p.http) != len(o.http) || len(p.dns) != len(o.dns) {
		return false
	}
	for i := range p.http {
		a, b := p.http[i], o.http[i]
		if a.Rule != b.Rule || a.From != b.From || !slices.Equal(a.Remotes, b.Remotes) {
			return false
		}
	}
	for i := range p.dns {
		a, b := p.dns[i], o.dns[i]
		if a.Rule != b.Rule || a.From != b.From || !slices.Equal(a.Remotes, b.Remotes) {
			return false
		}
	}
	return true
}

func pieceRange(proto Protocol, from, to uint16) PortRange {
	return outputRange(proto, PortRange{From: from, To: to})
}

// httpRuleSets and dnsRuleSets convert pieces to the Plan's types.
func httpRuleSets(pieces []l7Piece) []HTTPRuleSet {
	if len(pieces) == 0 {
		return nil
	}
	out := make([]HTTPRuleSet, len(pieces))
	for i, p := range pieces {
		out[i] = HTTPRuleSet{Proto: p.proto, Ports: pieceRange(p.proto, p.from, p.to), Rules: p.http}
	}
	return out
}

func dnsRuleSets(pieces []l7Piece) []DNSRuleSet {
	if len(pieces) == 0 {
		return nil
	}
	out := make([]DNSRuleSet, len(pieces))
	for i, p := range pieces {
		out[i] = DNSRuleSet{Proto: p.proto, Ports: pieceRange(p.proto, p.from, p.to), Rules: p.dns}
	}
	return out
}
