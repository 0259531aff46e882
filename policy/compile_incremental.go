package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
)

// Compiler keeps policies, endpoints, namespaces and the node, and
// maintains the Plan as they change. A change recomputes only what it can
// affect:
//
//   - a policy change recomputes the identities its rules select;
//   - an identity that appears or disappears (an endpoint with a new label
//     set, a new CIDR in some policy) updates the selector cache, and every
//     identity whose compiled policy used a selection that gained or lost it
//     recomputes the entries of that one remote identity (and its L7 rule
//     sets);
//   - endpoints sharing a label set share one identity and one computation.
//
// Work is deferred to Plan, so a batch of changes costs one recomputation.
// Compile and a Compiler fed the same state return identical Plans. A
// Compiler is not safe for concurrent use.
type Compiler struct {
	opts  Options
	alloc Allocator
	cache *selCache

	policies   map[policyKey]*loadedPolicy
	endpoints  map[endpointKey]*endpointState
	namespaces map[string]*Namespace
	node       Node
	// Remote peers (compile_remote.go): endpoints of other nodes, and the
	// addresses of the other nodes and of the kube-apiserver.
	remotes      map[endpointKey]*endpointState
	remoteOwners map[netip.Addr]map[endpointKey]struct{}
	remoteNodes  map[netip.Addr]struct{}
	apiServers   map[netip.Addr]struct{}

	idents     map[ID]*identState
	identByKey map[string]*identState

	cidrRefs map[netip.Prefix]int
	fqdnRefs map[FQDNSelector]int
	locals   map[ID]*idInfo // current CIDR and FQDN identities
	cidrIDs  map[netip.Prefix]ID
	fqdnIDs  map[FQDNSelector]ID
	// localAlloc numbers CIDR and FQDN identities stably (alloc_local.go);
	// gen is the generation of the next Plan.
	localAlloc *LocalAllocator
	gen        uint64

	hostContrib *contrib // Options.AllowHostIngress

	// Pending work.
	fullDirty   map[ID]struct{}
	deltas      map[ID]map[ID]struct{}
	localsDirty bool

	stats CompilerStats

	// Output caches.
	sortedEndpoints []*endpointState // nil: stale
	identities      []Identity       // nil: stale
	ipcache         []IPCacheEntry
	ipcacheDirty    bool                 // the set of prefixes changed
	ipcIndex        map[netip.Prefix]int // position in ipcache
	ipcPatch        []netip.Prefix       // prefixes whose identity may have changed
	ipcacheFast     bool                 // LearnedDelta changed the set of prefixes
	addrOwners      map[netip.Addr]map[endpointKey]struct{}
	fqdns           []FQDNSelection

	// fq holds the addresses learned for toFQDNs names (compile_fqdn.go).
	fq *learnedState
}

type loadedPolicy struct {
	rules  []*compiledRule
	cidrs  []netip.Prefix
	fqdnss []FQDNSelector
}

type endpointState struct {
	key   endpointKey
	ep    Endpoint
	ident *identState
	addrs []netip.Addr // shared by Plans: read-only
}

// identState is the compiled policy of one label-set identity, shared by
// every local endpoint with that label set.
type identState struct {
	info *idInfo
	key  string
	refs int // endpoints holding it, local and remote
	// local counts the local endpoints holding it: only an identity with
	// local endpoints has its policy computed (remote peers' identities
	// are selectable, but their policy is their own node's business).
	local int
	deps  map[*selEntry]struct{}
	dirs  [2]dirState
}

type dirState struct {
	contribs  []*contrib
	perRemote map[ID][]Entry
	remotes   []ID // sorted keys of perRemote
	hasL7     bool
	plan      DirectionPlan // immutable once built
}

// CompilerStats counts the Compiler's work since it was created.
type CompilerStats struct {
	// FullRecomputes counts identities whose policy was rebuilt whole.
	FullRecomputes int `json:"fullRecomputes"`
	// DeltaRecomputes counts identities whose entries were updated for a
	// few remote identities only.
	DeltaRecomputes int `json:"deltaRecomputes"`
	// Plans counts calls of Plan.
	Plans int `json:"plans"`
	// LocalAllocFailures counts prefixes or selectors left without a
	// local identity because the LocalAllocator had no number free.
	LocalAllocFailures int `json:"localAllocFailures,omitempty"`
}

// Stats returns the work counters.
func (c *Compiler) Stats() CompilerStats { return c.stats }

// NewCompiler returns an empty Compiler. alloc gives label sets their
// identities; nil means a fresh MemoryAllocator. Node-local identities come
// from a fresh LocalAllocator.
func NewCompiler(opts Options, alloc Allocator) *Compiler {
	return NewCompilerWithLocals(opts, alloc, nil)
}

// NewCompilerWithLocals is NewCompiler with the LocalAllocator that numbers
// CIDR and FQDN identities (nil: a fresh one), e.g. one that adopted the
// numbers of pinned maps.
func NewCompilerWithLocals(opts Options, alloc Allocator, locals *LocalAllocator) *Compiler {
	if alloc == nil {
		alloc = NewMemoryAllocator()
	}
	if locals == nil {
		locals = NewLocalAllocator()
	}
	c := &Compiler{
		localAlloc:   locals,
		gen:          1,
		cidrIDs:      map[netip.Prefix]ID{},
		fqdnIDs:      map[FQDNSelector]ID{},
		opts:         opts,
		alloc:        alloc,
		policies:     map[policyKey]*loadedPolicy{},
		endpoints:    map[endpointKey]*endpointState{},
		namespaces:   map[string]*Namespace{},
		idents:       map[ID]*identState{},
		identByKey:   map[string]*identState{},
		cidrRefs:     map[netip.Prefix]int{},
		fqdnRefs:     map[FQDNSelector]int{},
		locals:       map[ID]*idInfo{},
		fullDirty:    map[ID]struct{}{},
		deltas:       map[ID]map[ID]struct{}{},
		ipcacheDirty: true,
		addrOwners:   map[netip.Addr]map[endpointKey]struct{}{},
		remotes:      map[endpointKey]*endpointState{},
		remoteOwners: map[netip.Addr]map[endpointKey]struct{}{},
		remoteNodes:  map[netip.Addr]struct{}{},
		apiServers:   map[netip.Addr]struct{}{},
	}
	c.cache = newSelCache(c.selectionChanged)
	for _, r := range ReservedIdentities() {
		c.cache.addIdentity(&idInfo{id: r.ID, kind: idKindReserved, labels: r.Labels})
	}
	if opts.AllowHostIngress {
		c.hostContrib = &contrib{
			dir:   Ingress,
			peers: []*selEntry{c.cache.acquire(selProtoEntity(EntityHost))},
			specs: []portSpec{{proto: ProtoAny, from: 1, to: 65535, verdict: VerdictAllow}},
			ref:   RuleRef{Policy: "option allowHostIngress"},
		}
	}
	return c
}

// selectionChanged is the selector cache's report that e gained or lost id.
func (c *Compiler) selectionChanged(e *selEntry, id ID) {
	for dep := range e.dependents {
		if _, full := c.fullDirty[dep]; full {
			continue
		}
		m := c.deltas[dep]
		if m == nil {
			m = map[ID]struct{}{}
			c.deltas[dep] = m
		}
		m[id] = struct{}{}
	}
	if len(e.subjectOf) > 0 {
		if _, ok := c.idents[id]; ok {
			c.fullDirty[id] = struct{}{}
		}
	}
}

// UpsertPolicy adds a policy or replaces the one with the same kind,
// namespace and name. The policy must have been validated.
func (c *Compiler) UpsertPolicy(p Policy) {
	key := keyOfPolicy(&p)
	lp := &loadedPolicy{rules: compilePolicyRules(&p, c.cache)}
	lp.cidrs, lp.fqdnss = policyLocals(&p)
	c.markSubjects(lp.rules)
	if old := c.policies[key]; old != nil {
		c.unloadPolicy(old)
	}
	c.policies[key] = lp
	for _, pf := range lp.cidrs {
		if c.cidrRefs[pf]++; c.cidrRefs[pf] == 1 {
			c.localsDirty = true
		}
	}
	for _, f := range lp.fqdnss {
		if c.fqdnRefs[f]++; c.fqdnRefs[f] == 1 {
			c.localsDirty = true
		}
	}
}

// DeletePolicy removes the policy with the given key; it reports whether
// there was one.
func (c *Compiler) DeletePolicy(kind Kind, namespace, name string) bool {
	key := policyKey{kind, namespace, name}
	old := c.policies[key]
	if old == nil {
		return false
	}
	delete(c.policies, key)
	c.unloadPolicy(old)
	return true
}

func (c *Compiler) unloadPolicy(lp *loadedPolicy) {
	c.markSubjects(lp.rules)
	releaseRules(lp.rules, c.cache)
	for _, pf := range lp.cidrs {
		if c.cidrRefs[pf]--; c.cidrRefs[pf] == 0 {
			delete(c.cidrRefs, pf)
			c.localsDirty = true
		}
	}
	for _, f := range lp.fqdnss {
		if c.fqdnRefs[f]--; c.fqdnRefs[f] == 0 {
			delete(c.fqdnRefs, f)
			c.localsDirty = true
		}
	}
}

// markSubjects schedules a full recomputation of the identities the rules
// apply to.
func (c *Compiler) markSubjects(rules []*compiledRule) {
	for _, r := range rules {
		for id := range r.subject.members {
			if _, ok := c.idents[id]; ok {
				c.fullDirty[id] = struct{}{}
				delete(c.deltas, id)
			}
		}
	}
}

// policyLocals lists the distinct prefixes (CIDR rules and their excepts,
// other than /0) and FQDN selectors of a policy.
func policyLocals(p *Policy) ([]netip.Prefix, []FQDNSelector) {
	pset := map[netip.Prefix]struct{}{}
	fset := map[FQDNSelector]struct{}{}
	add := func(pf netip.Prefix) {
		if pf = pf.Masked(); pf.IsValid() && pf.Bits() > 0 {
			pset[pf] = struct{}{}
		}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		for _, sec := range [][]PeerRule{r.Ingress, r.IngressDeny, r.Egress, r.EgressDeny} {
			for j := range sec {
				for _, cr := range sec[j].Peers.CIDRs {
					add(cr.Prefix)
					for _, ex := range cr.Except {
						add(ex)
					}
				}
				for _, f := range sec[j].Peers.FQDNs {
					fset[normalizeFQDNSelector(f)] = struct{}{}
				}
			}
		}
	}
	ps := make([]netip.Prefix, 0, len(pset))
	for pf := range pset {
		ps = append(ps, pf)
	}
	fs := make([]FQDNSelector, 0, len(fset))
	for f := range fset {
		fs = append(fs, f)
	}
	return ps, fs
}

// UpsertNamespace adds or replaces a namespace; its endpoints get the new
// namespace labels.
func (c *Compiler) UpsertNamespace(ns Namespace) error {
	n := ns
	n.Labels = compileCloneMap(ns.Labels)
	c.namespaces[ns.Name] = &n
	return c.relabelNamespace(ns.Name)
}

// DeleteNamespace forgets a namespace's labels.
func (c *Compiler) DeleteNamespace(name string) error {
	if _, ok := c.namespaces[name]; !ok {
		return nil
	}
	delete(c.namespaces, name)
	return c.relabelNamespace(name)
}

func (c *Compiler) relabelNamespace(name string) error {
	var errs []error
	for k, st := range c.endpoints {
		if k.Namespace != name {
			continue
		}
		if err := c.UpsertEndpoint(st.ep); err != nil {
			errs = append(errs, err)
		}
	}
	for k, st := range c.remotes {
		if k.Namespace != name {
			continue
		}
		if err := c.UpsertRemoteEndpoint(st.ep); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// UpsertEndpoint adds or replaces a local endpoint.
func (c *Compiler) UpsertEndpoint(ep Endpoint) error {
	if ep.Name == "" {
		return errors.New("upsert endpoint: empty name")
	}
	ep.Labels = compileCloneMap(ep.Labels)
	key := endpointKey{ep.Namespace, ep.Name}
	ls := EndpointLabels(ep, c.namespaces[ep.Namespace])
	st, err := c.holdIdentity(ls, true)
	if err != nil {
		return fmt.Errorf("upsert endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	old := c.endpoints[key]
	if old == nil {
		c.endpoints[key] = &endpointState{key: key, ep: ep, ident: st, addrs: endpointAddrs(&ep)}
		c.addOwner(c.addrOwners, key, &ep)
		c.sortedEndpoints = nil
		return nil
	}
	// Update in place: sortedEndpoints holds this pointer.
	oldEP, oldIdent := old.ep, old.ident
	old.ep, old.ident, old.addrs = ep, st, endpointAddrs(&ep)
	if oldEP.IPv4 == ep.IPv4 && oldEP.IPv6 == ep.IPv6 {
		for _, a := range old.addrs {
			a = a.Unmap()
			c.ipcPatch = append(c.ipcPatch, netip.PrefixFrom(a, a.BitLen()))
		}
	} else {
		c.removeOwner(c.addrOwners, key, &oldEP)
		c.addOwner(c.addrOwners, key, &ep)
	}
	if err := c.dropIdentity(oldIdent, true); err != nil {
		return fmt.Errorf("upsert endpoint %s/%s: %w", ep.Namespace, ep.Name, err)
	}
	return nil
}

// DeleteEndpoint removes a local endpoint; it reports whether there was one.
func (c *Compiler) DeleteEndpoint(namespace, name string) (bool, error) {
	key := endpointKey{namespace, name}
	old := c.endpoints[key]
	if old == nil {
		return false, nil
	}
	delete(c.endpoints, key)
	c.sortedEndpoints = nil
	c.removeOwner(c.addrOwners, key, &old.ep)
	if err := c.dropIdentity(old.ident, true); err != nil {
		return true, fmt.Errorf("delete endpoint %s/%s: %w", namespace, name, err)
	}
	return true, nil
}

// SetNode sets what the compiler knows about the node.
func (c *Compiler) SetNode(n Node) {
	n.Addresses = append([]netip.Addr(nil), n.Addresses...)
	c.node = n
	c.ipcacheDirty = true
}

// holdIdentity takes a reference on the identity of ls for a local
// endpoint (local) or a remote peer. An identity that gains its first local
// endpoint has its policy computed.
func (c *Compiler) holdIdentity(ls Labels, local bool) (*identState, error) {
	key := ls.Key()
	if st := c.identByKey[key]; st != nil {
		st.refs++
		if local {
			if st.local == 0 {
				c.fullDirty[st.info.id] = struct{}{}
				delete(c.deltas, st.info.id)
			}
			st.local++
		}
		return st, nil
	}
	id, err := c.alloc.Allocate(ls)
	if err != nil {
		return nil, err
	}
	if id < IDFirstAllocated || id.IsLocal() {
		_ = c.alloc.Release(id)
		return nil, fmt.Errorf("allocator returned identity %d outside the label-set range", id)
	}
	if other := c.idents[id]; other != nil {
		_ = c.alloc.Release(id)
		return nil, fmt.Errorf("allocator returned identity %d for %s, already held by %s", id, key, other.key)
	}
	st := &identState{info: &idInfo{id: id, kind: idKindLabels, labels: ls}, key: key, refs: 1, deps: map[*selEntry]struct{}{}}
	c.idents[id] = st
	c.identByKey[key] = st
	c.insertIdentity(Identity{ID: id, Labels: ls})
	if local {
		st.local = 1
		c.fullDirty[id] = struct{}{}
	}
	c.cache.addIdentity(st.info)
	return st, nil
}

// dropIdentity drops a reference taken by holdIdentity with the same local.
// An identity left without local endpoints forgets its computed policy.
func (c *Compiler) dropIdentity(st *identState, local bool) error {
	st.refs--
	if local {
		st.local--
		if st.local == 0 && st.refs > 0 {
			c.forgetPolicyOf(st)
		}
	}
	if st.refs > 0 {
		return nil
	}
	id := st.info.id
	delete(c.idents, id)
	delete(c.identByKey, st.key)
	delete(c.fullDirty, id)
	delete(c.deltas, id)
	c.removeIdentityFromList(id)
	for e := range st.deps {
		delete(e.dependents, id)
	}
	c.cache.removeIdentity(id)
	if err := c.alloc.Release(id); err != nil {
		return fmt.Errorf("release identity %d: %w", id, err)
	}
	return nil
}

// fqdnLocalKey is an FQDN selector's key in the LocalAllocator.
func fqdnLocalKey(f FQDNSelector) string {
	if f.MatchName != "" {
		return "matchName=" + f.MatchName
	}
	return "matchPattern=" + f.MatchPattern
}

// renumberLocals brings the CIDR and FQDN identities in line with the
// prefixes and selectors in force: a new one acquires a number from the
// LocalAllocator (new ones in sorted order, so that a compilation from
// scratch numbers them as it always has), one no longer used releases its
// number into quarantine, stamped with the generation of the Plan being
// built (see ConfirmApplied), and every other keeps its number. The cache
// is updated for those that changed.
func (c *Compiler) renumberLocals() {
	ps := make([]netip.Prefix, 0, len(c.cidrRefs))
	for pf := range c.cidrRefs {
		if _, ok := c.cidrIDs[pf]; !ok {
			ps = append(ps, pf)
		}
	}
	sortPrefixOrder(ps)
	for pf := range c.cidrIDs {
		if _, ok := c.cidrRefs[pf]; !ok {
			_ = c.localAlloc.Release(LocalCIDR, pf.String(), c.gen) // held: cidrIDs says so
			delete(c.cidrIDs, pf)
		}
	}
	for _, pf := range ps {
		id, err := c.localAlloc.Acquire(LocalCIDR, pf.String())
		if err != nil {
			c.stats.LocalAllocFailures++
			continue
		}
		c.cidrIDs[pf] = id
	}
	fs := make([]FQDNSelector, 0, len(c.fqdnRefs))
	for f := range c.fqdnRefs {
		if _, ok := c.fqdnIDs[f]; !ok {
			fs = append(fs, f)
		}
	}
	sortFQDNSelectors(fs)
	for f := range c.fqdnIDs {
		if _, ok := c.fqdnRefs[f]; !ok {
			_ = c.localAlloc.Release(LocalFQDN, fqdnLocalKey(f), c.gen)
			delete(c.fqdnIDs, f)
		}
	}
	for _, f := range fs {
		id, err := c.localAlloc.Acquire(LocalFQDN, fqdnLocalKey(f))
		if err != nil {
			c.stats.LocalAllocFailures++
			continue
		}
		c.fqdnIDs[f] = id
	}

	want := map[ID]*idInfo{}
	for pf, id := range c.cidrIDs {
		want[id] = &idInfo{id: id, kind: idKindCIDR, prefix: pf,
			labels: Labels{pf.String(): {Source: SourceCIDR, Key: pf.String()}}}
	}
	for f, id := range c.fqdnIDs {
		key, val := "matchName", f.MatchName
		if f.MatchName == "" {
			key, val = "matchPattern", f.MatchPattern
		}
		want[id] = &idInfo{id: id, kind: idKindFQDN, fqdn: f,
			labels: Labels{key: {Source: SourceFQDN, Key: key, Value: val}}}
	}
	for id, old := range c.locals {
		if n := want[id]; n == nil || n.prefix != old.prefix || n.fqdn != old.fqdn || n.kind != old.kind {
			c.cache.removeIdentity(id)
			delete(c.locals, id)
		}
	}
	ids := make([]ID, 0, len(want))
	for id := range want {
		if c.locals[id] == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		c.locals[id] = want[id]
		c.cache.addIdentity(want[id])
	}
	c.identities = nil
	c.ipcacheDirty = true
	all := make([]FQDNSelector, 0, len(c.fqdnIDs))
	for f := range c.fqdnIDs {
		all = append(all, f)
	}
	sortFQDNSelectors(all)
	c.fqdns = make([]FQDNSelection, 0, len(all))
	for _, f := range all {
		c.fqdns = append(c.fqdns, FQDNSelection{Selector: f, Identity: c.fqdnIDs[f]})
	}
}

func sortFQDNSelectors(fs []FQDNSelector) {
	sort.Slice(fs, func(i, j int) bool {
		if fs[i].MatchName != fs[j].MatchName {
			return fs[i].MatchName < fs[j].MatchName
		}
		return fs[i].MatchPattern < fs[j].MatchPattern
	})
}

// ConfirmApplied tells the compiler that the Plan of generation gen (see
// Plan.Generation) and every earlier one are fully applied: the datapath
// Sync of that Plan succeeded and every proxy has ACKed the configuration
// made from it. Local identity numbers that those Plans dropped may then
// be given to other prefixes or selectors; until then they stay in
// quarantine, so that no new prefix inherits an old one's map entries or
// proxy rules. The agent calls it after each successful Sync + ACK;
// without calls, released numbers are simply never reused.
func (c *Compiler) ConfirmApplied(gen uint64) { c.localAlloc.Confirm(gen) }

// LocalIdentities returns the allocator of the compiler's node-local
// identities (shared with the DNS proxy for names).
func (c *Compiler) LocalIdentities() *LocalAllocator { return c.localAlloc }

func compileCloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
