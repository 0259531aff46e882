package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// dns.go owns the agent's side of DNS-aware policy: it runs the transparent
// DNS proxy (package dnsproxy), feeds it the Plan's DNS rules, answers its
// lookups (source endpoint, server identity, upstream mark) from the
// agent's state, and connects its FQDN cache to the compiler: addresses of
// names that toFQDNs selectors select are learned into the compiler and
// written to the ipcache (a datapath Sync) before the answer is released;
// addresses the cache forgets are forgotten there too, releasing their
// identities.
//
// Redirects of DNS rules carry the proxy's port only once its listeners are
// bound; until then (and if they cannot be bound) DNS redirects drop.

// dnsState is the agent's DNS proxy and what its lookups read.
type dnsState struct {
	proxy *dnsproxy.Proxy
	// up: the listeners are bound; DNS redirects may carry the port.
	up atomic.Bool
	// view is what the lookups read, rebuilt from each Plan the maps get.
	view atomic.Pointer[dnsView]
	// rulesFrom is the Plan whose DNS rules the proxy holds (callers of
	// dnsPlanSynced hold the agent's syncMu).
	rulesFrom *policy.Plan
	// refresh asks refreshLearned for a Plan soon (capacity 1); stale
	// says the maps hold learned addresses the agent's Plan lacks, which
	// the next periodic refresh takes in.
	refresh chan struct{}
	stale   atomic.Bool
	// planWaiters wait for runPlans' next Plan (waitPlan).
	planMu      sync.Mutex
	planWaiters []chan error
	planRunning bool
	// releases wait for releaseLoop (dns_release.go).
	releases *releases
}

// dnsView indexes one Plan for the proxy's per-query lookups.
type dnsView struct {
	endpoints map[netip.Addr]dnsproxy.EndpointInfo
	// hosts are the ipcache's host prefixes; prefixes the others, longest
	// first.
	hosts    map[netip.Addr]policy.ID
	prefixes []policy.IPCacheEntry
}

func newDNSView(plan *policy.Plan) *dnsView {
	v := &dnsView{endpoints: map[netip.Addr]dnsproxy.EndpointInfo{}, hosts: map[netip.Addr]policy.ID{}}
	labels := map[policy.ID][]string{}
	for _, idn := range plan.Identities {
		ls := make([]string, 0, len(idn.Labels))
		for _, l := range idn.Labels {
			ls = append(ls, l.String())
		}
		slices.Sort(ls)
		labels[idn.ID] = ls
	}
	for i := range plan.Endpoints {
		ep := &plan.Endpoints[i]
		info := dnsproxy.EndpointInfo{Identity: ep.Identity, Namespace: ep.Namespace, Name: ep.Name, Labels: labels[ep.Identity]}
		for _, a := range ep.Addresses {
			v.endpoints[a.Unmap()] = info
		}
	}
	for _, e := range plan.IPCache {
		if e.Prefix.IsSingleIP() {
			v.hosts[e.Prefix.Addr().Unmap()] = e.Identity
			continue
		}
		v.prefixes = append(v.prefixes, e)
	}
	slices.SortStableFunc(v.prefixes, func(a, b policy.IPCacheEntry) int { return b.Prefix.Bits() - a.Prefix.Bits() })
	return v
}

// identityOf resolves ip as the datapath does: a local endpoint, else the
// ipcache's longest-prefix match, else world.
func (v *dnsView) identityOf(ip netip.Addr) policy.ID {
	ip = ip.Unmap()
	if ep, ok := v.endpoints[ip]; ok {
		return ep.Identity
	}
	if id, ok := v.hosts[ip]; ok {
		return id
	}
	for _, e := range v.prefixes {
		if e.Prefix.Addr().Is4() == ip.Is4() && e.Prefix.Contains(ip) {
			return e.Identity
		}
	}
	return policy.IDWorld
}

// newDNSProxy builds the DNS proxy and binds its transparent listeners
// (UDP and TCP, IPv4 and, where the host has it, IPv6) on DNSProxyPort.
// Nothing serves until runDNSProxy.
func (a *Agent) newDNSProxy(ctx context.Context) error {
	d := &dnsState{refresh: make(chan struct{}, 1), releases: newReleases()}
	d.view.Store(&dnsView{})
	cfg := dnsproxy.Config{
		Listen:      []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), a.cfg.DNSProxyPort)},
		Transparent: true,
		Endpoints: dnsproxy.EndpointsFunc(func(ip netip.Addr) (dnsproxy.EndpointInfo, bool) {
			ep, ok := d.view.Load().endpoints[ip.Unmap()]
			return ep, ok
		}),
		Remotes: dnsproxy.RemotesFunc(func(ip netip.Addr) policy.ID { return d.view.Load().identityOf(ip) }),
		Mark: func(id policy.ID) (uint32, error) {
			return policy.ProxyMark(policy.Egress, id)
		},
		OnLearn:               a.learnFQDN,
		OnRelease:             d.releases.add,
		OnFlow:                a.recordDNS,
		NodeName:              a.cfg.NodeName,
		UpstreamSocketQueries: a.cfg.DNSUpstreamSocketQueries,
		Logger:                a.log.With("component", "dnsproxy"),
		Registerer:            a.reg,
	}
	if hostHasIPv6() {
		cfg.Listen = append(cfg.Listen, netip.AddrPortFrom(netip.IPv6Unspecified(), a.cfg.DNSProxyPort))
	}
	store, saved := a.openDNSStore()
	cfg.Store = store
	p, err := dnsproxy.New(cfg)
	if err != nil {
		return fmt.Errorf("create dns proxy: %w", err)
	}
	if err := p.Bind(ctx); err != nil {
		return fmt.Errorf("dns proxy: %w", err)
	}
	d.proxy = p
	a.dns = d
	// Before it serves: the rules and the learned names of the previous
	// run. The learned addresses go into the compiler (there is no Plan
	// yet), so the first Plan keeps the pinned ipcache's entries for them.
	if err := p.Restore(ctx, saved); err != nil {
		a.log.Warn("dns proxy state partly restored", "err", err)
	}
	if n := len(saved.Cache); n > 0 {
		a.log.Info("restored the dns proxy's state", "cacheEntries", n, "endpointsWithRules", len(saved.Rules))
	}
	d.up.Store(true)
	return nil
}

// openDNSStore opens the DNS proxy's state in the state directory. A state
// that cannot be read is moved aside (and logged): the proxy starts empty,
// as on a first start, rather than not at all.
func (a *Agent) openDNSStore() (*dnsproxy.Store, dnsproxy.State) {
	path := filepath.Join(a.cfg.StateDir, "dnsproxy.json")
	store, saved, err := dnsproxy.OpenStore(path)
	if err == nil {
		return store, saved
	}
	aside := path + ".unreadable"
	a.log.Error("dns proxy state unreadable; starting without it", "err", err, "movedTo", aside)
	_ = os.Rename(path, aside)
	if js, _ := filepath.Glob(path + ".journal.*"); len(js) > 0 {
		for _, j := range js {
			_ = os.Rename(j, aside+"."+filepath.Base(j))
		}
	}
	store, saved, err = dnsproxy.OpenStore(path)
	if err != nil {
		a.log.Error("dns proxy state: cannot keep state this run", "err", err)
		return nil, dnsproxy.State{Version: dnsproxy.StateVersion}
	}
	return store, saved
}

// hostHasIPv6 reports whether the host has IPv6 (the DNS proxy then
// listens on [::] too).
func hostHasIPv6() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

// recordDNS enriches a DNS exchange's flow record with the endpoints'
// metadata (workload, app) and records it like every other flow: the ring
// (`moat observe`) and the Hubble metrics (hubble_dns_*).
func (a *Agent) recordDNS(f flow.Flow) {
	src, dst := f.Source.Labels, f.Destination.Labels
	flow.Enrich(flow.EnricherFunc(a.resolve), &f)
	if len(f.Source.Labels) == 0 {
		f.Source.Labels = src
	}
	if len(f.Destination.Labels) == 0 {
		f.Destination.Labels = dst
	}
	a.record(f)
}

// runDNSProxy serves DNS until ctx ends.
func (a *Agent) runDNSProxy(ctx context.Context) error {
	if a.dns == nil {
		return nil
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.refreshLearned(ctx) })
	g.Go(func() error { return a.releaseLoop(ctx) })
	g.Go(func() error { return a.dns.proxy.Run(ctx) })
	return g.Wait()
}

// addDNSPort adds the DNS proxy's port to the redirect ports when its
// listeners are up.
func (a *Agent) addDNSPort(out datapath.ProxyPorts) {
	if a.dns != nil && a.dns.up.Load() {
		out[datapath.ProxyKey{Direction: policy.Egress, L7: policy.L7DNS}] = a.cfg.DNSProxyPort
	}
}

// dnsPlanSynced tells the proxy about a Plan before the maps get it: its DNS
// rules (an atomic swap) and the lookup view. Callers hold a.syncMu, so
// Plans arrive in order.
func (a *Agent) dnsPlanSynced(plan *policy.Plan) {
	if a.dns == nil {
		return
	}
	a.dns.view.Store(newDNSView(plan))
	if prev := a.dns.rulesFrom; prev != nil && sameDNSRules(prev, plan) {
		return // a Plan that only learned addresses: the compiled rules stand
	}
	if err := a.dns.proxy.SetPolicy(dnsproxy.PolicyFromPlan(plan)); err != nil {
		a.log.Warn("dns rules partly skipped (they match nothing)", "err", err)
	}
	a.dns.rulesFrom = plan
}

// sameDNSRules reports whether two Plans carry the same DNS rules and
// toFQDNs selections. Plans share unchanged rule sets with the compiler, so
// identical slices mean identical rules; anything else counts as a change.
func sameDNSRules(a, b *policy.Plan) bool {
	if len(a.Endpoints) != len(b.Endpoints) || !slices.Equal(a.FQDNs, b.FQDNs) {
		return false
	}
	for i := range a.Endpoints {
		x, y := &a.Endpoints[i], &b.Endpoints[i]
		if x.Namespace != y.Namespace || x.Name != y.Name || len(x.Egress.DNS) != len(y.Egress.DNS) {
			return false
		}
		if len(x.Egress.DNS) > 0 && &x.Egress.DNS[0] != &y.Egress.DNS[0] {
			return false
		}
	}
	return true
}

// learnFQDN is the proxy's OnLearn hook: the addresses go into the
// compiler and into the maps before the answer is released. Most answers
// only add addresses to a class identity the maps hold already: those are
// written as single ipcache entries (the fast path, policy.LearnedDelta),
// and the agent's Plan catches up shortly after (refreshLearned). The
// others take a new Plan and a full map sync. Before the first reconcile
// there is nothing to sync into (the first reconcile writes what was
// learned).
func (a *Agent) learnFQDN(ctx context.Context, name string, ips []netip.Addr, _ []policy.FQDNSelection) error {
	a.syncMu.Lock()
	if err := ctx.Err(); err != nil {
		a.syncMu.Unlock()
		return err
	}
	a.compMu.Lock()
	a.compiler.LearnFQDN(name, ips)
	if a.patchLearnedLocked() && !a.compiler.LearnedPending(ips) {
		a.compMu.Unlock()
		a.syncMu.Unlock()
		return nil
	}
	a.compMu.Unlock()
	a.syncMu.Unlock()
	// An address of this answer needs a Plan (a new class identity):
	// written before the answer is released, by the next Plan that
	// starts after this learn (one Plan for every answer that waits).
	return a.waitPlan(ctx)
}

// waitPlan waits for a Plan taken after the caller's changes to the
// compiler and for its map write. Concurrent callers share Plans: each
// round of runPlans serves every caller that was waiting when it began.
func (a *Agent) waitPlan(ctx context.Context) error {
	ch := make(chan error, 1)
	a.dns.planMu.Lock()
	a.dns.planWaiters = append(a.dns.planWaiters, ch)
	if !a.dns.planRunning {
		a.dns.planRunning = true
		go a.runPlans()
	}
	a.dns.planMu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runPlans takes Plans and writes them while callers of waitPlan wait.
func (a *Agent) runPlans() {
	for {
		a.dns.planMu.Lock()
		waiters := a.dns.planWaiters
		a.dns.planWaiters = nil
		if len(waiters) == 0 {
			a.dns.planRunning = false
			a.dns.planMu.Unlock()
			return
		}
		a.dns.planMu.Unlock()
		err := a.refreshNow()
		for _, w := range waiters {
			w <- err
		}
	}
}

// forgetFQDN forgets addresses the cache released and no live connection
// uses (releaseNow, dns_release.go). Addresses that leave a class
// which keeps others are deleted from the maps at once; anything else (a
// class identity released) waits for the next refresh, so that expiring
// names never hold up the answers being released.
func (a *Agent) forgetFQDN(name string, ips []netip.Addr) {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.compMu.Lock()
	a.compiler.ForgetFQDN(name, ips)
	if !a.patchLearnedLocked() {
		a.kickRefresh()
	}
	a.compMu.Unlock()
}

// patchLearnedLocked writes the compiler's pending learned addresses that
// need no more than an ipcache entry into the maps as a patch, and reports
// whether it could look at them (the maps hold the latest Plan). What needs
// a Plan waits for the next refresh, or for the caller's Plan. Callers hold
// syncMu and compMu.
// When the patch fails, the compiler's next Plan still has the addresses
// and the full Sync it takes writes what the maps lack.
func (a *Agent) patchLearnedLocked() bool {
	a.mu.RLock()
	plan, synced := a.state.plan, a.proxy.syncedGen
	a.mu.RUnlock()
	if plan == nil || plan.Generation != synced {
		return false // the maps do not hold the latest Plan
	}
	delta, ok := a.compiler.LearnedDelta(plan.Generation)
	if !ok {
		return false
	}
	if a.compiler.LearnedWaiting() > 0 {
		a.kickRefresh()
	}
	if delta.Empty() {
		return true
	}
	err := a.maps.PatchIPCache(delta)
	if err != nil {
		// The compiler counts the addresses as written; the maps may hold
		// part of them. A Plan and a full Sync converge both.
		a.log.Warn("patch ipcache with dns addresses; syncing the plan instead", "err", err)
		return false
	}
	a.m.fqdnWrites.WithLabelValues("patch").Inc()
	a.dns.stale.Store(true)
	return true
}

// syncPlanLocked takes a new Plan and writes it to the maps (the same
// write as reconcile's). Callers hold syncMu and compMu; it releases
// compMu.
func (a *Agent) syncPlanLocked() error {
	a.mu.RLock()
	prev := a.state.plan
	a.mu.RUnlock()
	if prev == nil {
		a.compMu.Unlock()
		return nil
	}
	plan := a.compiler.Plan()
	a.compMu.Unlock()
	a.dnsPlanSynced(plan)
	a.mu.Lock()
	a.state.plan = plan
	ifaces := a.state.ifaces
	a.proxy.need = httpListeners(plan)
	proxies := a.redirectPorts()
	a.mu.Unlock()
	start := time.Now()
	err := a.maps.Sync(plan, ifaces, proxies)
	a.m.reconcileSeconds.Observe(time.Since(start).Seconds())
	a.m.fqdnWrites.WithLabelValues("plan").Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("sync policy maps (dns): %w", err)
		a.state.lastError = err.Error()
		return err
	}
	a.proxy.written = proxies
	a.proxy.syncedGen = plan.Generation
	a.markAppliedLocked()
	a.publishProxyLocked()
	return nil
}

// kickRefresh asks refreshLearned for a Plan soon.
func (a *Agent) kickRefresh() {
	if a.dns == nil {
		return
	}
	select {
	case a.dns.refresh <- struct{}{}:
	default:
	}
}

// refreshLearned brings the agent's Plan up to date with the learned
// addresses: soon (kickRefreshDelay) when addresses wait for a Plan (a
// class released or changed), and every staleRefresh when the maps hold
// patched addresses the Plan lacks (the API's plan and trace read it; the
// DNS proxy's lookups and `moat fqdn cache` do not need it). A stream of
// answers so costs one Plan per period, not one per answer.
func (a *Agent) refreshLearned(ctx context.Context) error {
	const kickRefreshDelay, staleRefresh = 250 * time.Millisecond, 2 * time.Second
	t := time.NewTicker(staleRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if !a.dns.stale.Load() {
				continue
			}
		case <-a.dns.refresh:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(kickRefreshDelay):
			}
		}
		if err := a.refreshNow(); err != nil {
			a.log.Warn("write learned dns addresses", "err", err)
			a.kickRefresh()
		}
	}
}

// refreshNow takes a Plan and writes it to the maps if it changed the
// learned addresses.
func (a *Agent) refreshNow() error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.compMu.Lock()
	if a.dns != nil {
		a.dns.stale.Store(false)
	}
	return a.syncPlanLocked()
}

// FQDNCacheEntry is one line of GET /v1/fqdn/cache (`moat fqdn cache`).
type FQDNCacheEntry struct {
	Name     string    `json:"name"`
	IP       string    `json:"ip"`
	TTL      string    `json:"ttl"`
	Expires  time.Time `json:"expires"`
	Identity policy.ID `json:"identity,omitempty"`
}

// FQDNCache is GET /v1/fqdn/cache's answer.
type FQDNCache struct {
	Entries []FQDNCacheEntry `json:"entries"`
	// LearnedAddresses and LearnedIdentities are the compiler's counts.
	LearnedAddresses  int `json:"learnedAddresses"`
	LearnedIdentities int `json:"learnedIdentities"`
}

// errNoDNSProxy answers the FQDN API when the proxy is not running.
var errNoDNSProxy = errors.New("the dns proxy is not running")

// fqdnCache reports the proxy's cache with the identities the addresses
// have in the maps (the compiler's host entries: what the last Plan and
// the patches since wrote).
func (a *Agent) fqdnCache() (FQDNCache, error) {
	if a.dns == nil {
		return FQDNCache{}, errNoDNSProxy
	}
	var out FQDNCache
	a.mu.RLock()
	planned := a.state.plan != nil
	a.mu.RUnlock()
	now := time.Now()
	entries := a.dns.proxy.Cache().Entries()
	a.compMu.Lock()
	for _, e := range entries {
		fe := FQDNCacheEntry{Name: e.Name, IP: e.IP.String(), Expires: e.Expires, TTL: max(0, e.Expires.Sub(now)).Round(time.Second).String()}
		if planned {
			if id, ok := a.compiler.HostIdentity(e.IP); ok {
				fe.Identity = id
			}
		}
		out.Entries = append(out.Entries, fe)
	}
	out.LearnedAddresses, out.LearnedIdentities = a.compiler.LearnedFQDNs()
	a.compMu.Unlock()
	return out, nil
}

// registerDNSAPI adds the FQDN endpoints to the local API.
func (a *Agent) registerDNSAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/fqdn/cache", func(w http.ResponseWriter, r *http.Request) {
		c, err := a.fqdnCache()
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, c)
	})
}
