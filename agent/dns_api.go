package agent

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/moatnet/moat/dnsproxy"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policy/fqdn"
)

// dns_api.go owns POST /v1/fqdn/flush (`moat fqdn flush`): it drops FQDN
// cache entries so that the next query for the name is learned afresh (and
// a restart does not restore them: Proxy.FlushFunc compacts the state). The
// cache forgets them through its release path (the proxy's OnRelease hook:
// the pending releases of dns_release.go), and the flush sweeps them at
// once: addresses no live connection uses leave the compiler and the
// ipcache, and identities no address needs any more are released, before
// the request returns; addresses in use stay until their flows end (the
// answer counts them as deferred).

// FQDNFlush is POST /v1/fqdn/flush's answer.
type FQDNFlush struct {
	Names     []dnsproxy.FlushedName `json:"names"`
	Addresses int                    `json:"addresses"`
	// Deferred counts flushed addresses that a live connection still
	// uses: they stay in the ipcache until their flows end.
	Deferred int `json:"deferred"`
}

// FQDNFlushFilter selects the names a flush drops; the zero value drops all.
type FQDNFlushFilter struct {
	// Name is a matchPattern (or a plain name): "*.example.com".
	Name string
	// Endpoint ("namespace/name", or "name" in default) limits the flush
	// to names that endpoint's DNS rules let it ask about. The cache is
	// per node: other endpoints that use those names learn them again too.
	Endpoint string
}

// errUnknownEndpoint answers a flush for an endpoint the Plan lacks.
var errUnknownEndpoint = errors.New("unknown endpoint")

// errFlushWrite: the flush happened but writing the Plan or the state
// file after it failed.
var errFlushWrite = errors.New("write the plan or the dns state after the flush")

// flushFQDN drops the cache entries f selects.
func (a *Agent) flushFQDN(f FQDNFlushFilter) (FQDNFlush, error) {
	if a.dns == nil {
		return FQDNFlush{}, errNoDNSProxy
	}
	var matchers []*fqdn.Matcher
	if f.Name != "" && f.Name != "*" {
		m, err := fqdn.NewMatcher(nil, []string{f.Name})
		if err != nil {
			return FQDNFlush{}, fmt.Errorf("name: %w", err)
		}
		matchers = append(matchers, m)
	}
	if f.Endpoint != "" {
		m, err := a.endpointDNSMatcher(f.Endpoint)
		if err != nil {
			return FQDNFlush{}, err
		}
		matchers = append(matchers, m)
	}
	names, ferr := a.dns.proxy.FlushFunc(func(name string) bool {
		for _, m := range matchers {
			if !m.Match(name) {
				return false
			}
		}
		return true
	})
	out := FQDNFlush{Names: names}
	if out.Names == nil {
		out.Names = []dnsproxy.FlushedName{}
	}
	for _, n := range names {
		out.Addresses += len(n.IPs)
	}
	if len(names) == 0 {
		return out, nil
	}
	if r := a.dns.releases; r != nil {
		a.releaseNow()
		r.mu.Lock()
		for _, n := range names {
			for _, ip := range n.IPs {
				if _, ok := r.pending[n.Name][ip.Unmap()]; ok {
					out.Deferred++
				}
			}
		}
		r.mu.Unlock()
	}
	// The forgotten addresses are out of the maps now (patched), but a
	// class identity left without addresses goes only with the next Plan:
	// write it before answering.
	if err := a.refreshNow(); err != nil {
		return out, fmt.Errorf("%w: %w", errFlushWrite, err)
	}
	if ferr != nil {
		// The names are gone from the cache and the maps; the state file
		// may still hold them until the next compaction.
		return out, fmt.Errorf("%w: %w", errFlushWrite, ferr)
	}
	return out, nil
}

// endpointDNSMatcher matches the names an endpoint's egress DNS rules
// allow in the Plan in force (a rule without a DNS part allows every name).
func (a *Agent) endpointDNSMatcher(ref string) (*fqdn.Matcher, error) {
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		ns, name = "default", ref
	}
	if ns == "" || name == "" {
		return nil, fmt.Errorf("endpoint %q: want namespace/name or name", ref)
	}
	a.mu.RLock()
	plan := a.state.plan
	a.mu.RUnlock()
	var ep *policy.EndpointPlan
	if plan != nil {
		ep = plan.Endpoint(ns, name)
	}
	if ep == nil {
		return nil, fmt.Errorf("endpoint %s/%s: %w", ns, name, errUnknownEndpoint)
	}
	var names, patterns []string
	for _, set := range ep.Egress.DNS {
		for _, r := range set.Rules {
			switch {
			case r.Rule == nil:
				patterns = append(patterns, "*")
			case r.Rule.MatchName != "":
				names = append(names, r.Rule.MatchName)
			case r.Rule.MatchPattern != "":
				patterns = append(patterns, r.Rule.MatchPattern)
			}
		}
	}
	m, err := fqdn.NewMatcher(names, patterns)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s/%s dns rules: %w", ns, name, err)
	}
	return m, nil
}

// registerDNSFlushAPI adds POST /v1/fqdn/flush?name=PATTERN&endpoint=NS/NAME.
func (a *Agent) registerDNSFlushAPI(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/fqdn/flush", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		res, err := a.flushFQDN(FQDNFlushFilter{Name: q.Get("name"), Endpoint: q.Get("endpoint")})
		switch {
		case errors.Is(err, errNoDNSProxy):
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		case errors.Is(err, errUnknownEndpoint):
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		case errors.Is(err, errFlushWrite):
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, res)
	})
}
