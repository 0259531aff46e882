package policy

import (
	"net/netip"
	"sort"
)

// compile_plan.go runs the deferred recomputations and assembles the Plan.

// Plan brings the compiled state up to date and returns the Plan. The Plan
// shares immutable parts (entries, rule sets, labels) with the Compiler and
// with earlier Plans: treat it as read-only.
func (c *Compiler) Plan() *Plan {
	c.sync()
	c.stats.Plans++
	if c.sortedEndpoints == nil {
		c.sortedEndpoints = make([]*endpointState, 0, len(c.endpoints))
		for _, st := range c.endpoints {
			c.sortedEndpoints = append(c.sortedEndpoints, st)
		}
		sort.Slice(c.sortedEndpoints, func(i, j int) bool { return c.sortedEndpoints[i].key.less(c.sortedEndpoints[j].key) })
	}
	p := &Plan{Endpoints: make([]EndpointPlan, len(c.sortedEndpoints)), Generation: c.gen}
	c.gen++
	for i, st := range c.sortedEndpoints {
		id := st.ident
		p.Endpoints[i] = EndpointPlan{
			Name:      st.key.Name,
			Namespace: st.key.Namespace,
			Identity:  id.info.id,
			Addresses: st.addrs,
			Ingress:   id.dirs[Ingress].plan,
			Egress:    id.dirs[Egress].plan,
		}
	}
	c.syncIPCache()
	c.markLearnedPlanned()
	p.IPCache = append([]IPCacheEntry(nil), c.ipcache...)
	if c.identities == nil {
		c.identities = c.buildIdentities()
	}
	p.Identities = append([]Identity(nil), c.identities...)
	p.FQDNs = append([]FQDNSelection(nil), c.fqdns...)
	return p
}

func endpointAddrs(ep *Endpoint) []netip.Addr {
	var out []netip.Addr
	if ep.IPv4.IsValid() {
		out = append(out, ep.IPv4)
	}
	if ep.IPv6.IsValid() {
		out = append(out, ep.IPv6)
	}
	return out
}

// sync performs the deferred work.
func (c *Compiler) sync() {
	localsChanged := c.localsDirty
	if c.localsDirty {
		c.localsDirty = false
		c.renumberLocals()
	}
	c.syncLearned(localsChanged)
	for id := range c.fullDirty {
		if st := c.idents[id]; st != nil && st.local > 0 {
			c.recomputeIdentity(st)
			c.stats.FullRecomputes++
		}
		delete(c.deltas, id)
	}
	clear(c.fullDirty)
	for id, xs := range c.deltas {
		if st := c.idents[id]; st != nil && st.local > 0 {
			c.applyDelta(st, xs)
			c.stats.DeltaRecomputes++
		}
	}
	clear(c.deltas)
}

// recomputeIdentity rebuilds the whole compiled policy of one identity.
func (c *Compiler) recomputeIdentity(st *identState) {
	id := st.info.id
	for e := range st.deps {
		delete(e.dependents, id)
	}
	clear(st.deps)
	var rules []*compiledRule
	for e := range c.cache.memberOf[id] {
		for r := range e.subjectOf {
			rules = append(rules, r)
		}
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].less(rules[j]) })
	for d := Ingress; d <= Egress; d++ {
		ds := &st.dirs[d]
		enforced := false
		for _, r := range rules {
			if r.defaultDeny[d] {
				enforced = true
			}
		}
		ds.contribs = ds.contribs[:0:0]
		if d == Ingress && enforced && c.hostContrib != nil {
			ds.contribs = append(ds.contribs, c.hostContrib)
		}
		for _, r := range rules {
			for _, ct := range r.contribs {
				if ct.dir == d {
					ds.contribs = append(ds.contribs, ct)
				}
			}
		}
		ds.hasL7 = false
		remotes := map[ID]struct{}{}
		for _, ct := range ds.contribs {
			ds.hasL7 = ds.hasL7 || ct.hasL7
			for _, e := range ct.peers {
				e.dependents[id] = struct{}{}
				st.deps[e] = struct{}{}
				for x := range e.members {
					remotes[x] = struct{}{}
				}
			}
		}
		ds.perRemote = make(map[ID][]Entry, len(remotes))
		ds.remotes = make([]ID, 0, len(remotes))
		for x := range remotes {
			if es := mergeRemote(ds.contribs, x); len(es) > 0 {
				ds.perRemote[x] = es
				ds.remotes = append(ds.remotes, x)
			}
		}
		sort.Slice(ds.remotes, func(i, j int) bool { return ds.remotes[i] < ds.remotes[j] })
		ds.plan = DirectionPlan{Enforced: enforced}
		ds.assemble()
	}
}

// applyDelta recomputes the entries of the remote identities xs, whose
// membership in some selection this identity uses changed.
func (c *Compiler) applyDelta(st *identState, xs map[ID]struct{}) {
	for d := Ingress; d <= Egress; d++ {
		ds := &st.dirs[d]
		changed := false
		for x := range xs {
			es := mergeRemote(ds.contribs, x)
			_, had := ds.perRemote[x]
			if len(es) == 0 && !had {
				continue
			}
			changed = true
			i := sort.Search(len(ds.remotes), func(i int) bool { return ds.remotes[i] >= x })
			switch {
			case len(es) == 0:
				delete(ds.perRemote, x)
				ds.remotes = append(ds.remotes[:i:i], ds.remotes[i+1:]...)
			case !had:
				ds.perRemote[x] = es
				n := make([]ID, 0, len(ds.remotes)+1)
				n = append(n, ds.remotes[:i]...)
				n = append(n, x)
				ds.remotes = append(n, ds.remotes[i:]...)
			default:
				ds.perRemote[x] = es
			}
		}
		if changed || ds.hasL7 {
			ds.plan = DirectionPlan{Enforced: ds.plan.Enforced}
			ds.assemble()
		}
	}
}

// assemble builds the direction's immutable plan from per-remote entries.
func (ds *dirState) assemble() {
	n := 0
	for _, x := range ds.remotes {
		n += len(ds.perRemote[x])
	}
	if n > 0 {
		entries := make([]Entry, 0, n)
		for _, x := range ds.remotes {
			entries = append(entries, ds.perRemote[x]...)
		}
		ds.plan.Entries = entries
	}
	if ds.hasL7 {
		ds.plan.HTTP = httpRuleSets(l7RuleSets(ds.contribs, L7HTTP))
		ds.plan.DNS = dnsRuleSets(l7RuleSets(ds.contribs, L7DNS))
	}
}

// buildIdentities lists every known identity by ID.
func (c *Compiler) buildIdentities() []Identity {
	out := ReservedIdentities()
	for id, st := range c.idents {
		out = append(out, Identity{ID: id, Labels: st.info.labels})
	}
	for id, info := range c.locals {
		out = append(out, Identity{ID: id, Labels: info.labels})
	}
	out = c.learnedIdentities(out)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
