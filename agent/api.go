package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// Status is what GET /v1/status returns and `moat status` prints.
type Status struct {
	Node      string    `json:"node"`
	Revision  uint64    `json:"revision"`
	LastSync  time.Time `json:"lastSync,omitzero"`
	LastError string    `json:"lastError,omitempty"`
	// Mode is "standalone" or "kubernetes".
	Mode         string   `json:"mode"`
	Policies     int      `json:"policies"`
	PolicyErrors []string `json:"policyErrors,omitempty"`
	// Identities counts the label-set identities the plan knows (local
	// and remote endpoints').
	Identities int `json:"identities"`
	// RemoteEndpoints counts other nodes' endpoints (Kubernetes mode).
	RemoteEndpoints int `json:"remoteEndpoints,omitempty"`
	// SourcesStaleSince is when the source stopped reaching its origin
	// (the Kubernetes API); enforcement stays as it was meanwhile.
	SourcesStaleSince time.Time `json:"sourcesStaleSince,omitzero"`
	// SourcesSynced is false until the source has its complete initial
	// view (nothing is reconciled before).
	SourcesSynced bool `json:"sourcesSynced"`
	// ConfigError reports a bad (or changed, pending restart) ConfigMap.
	ConfigError    string           `json:"configError,omitempty"`
	Endpoints      []EndpointStatus `json:"endpoints"`
	XDSVersion     string           `json:"xdsVersion,omitempty"`
	ProxyReady     bool             `json:"proxyReady"`
	ProxyError     string           `json:"proxyError,omitempty"`
	XDS            []xds.NodeStatus `json:"xds,omitempty"`
	FlowsBuffered  int              `json:"flowsBuffered"`
	FlowsDelivered uint64           `json:"flowsSeen"`
}

// EndpointStatus is one endpoint's line in Status.
type EndpointStatus struct {
	Namespace       string    `json:"namespace"`
	Name            string    `json:"name"`
	Identity        policy.ID `json:"identity"`
	Ifindex         int       `json:"ifindex"`
	IngressEnforced bool      `json:"ingressEnforced"`
	EgressEnforced  bool      `json:"egressEnforced"`
	IngressEntries  int       `json:"ingressEntries"`
	EgressEntries   int       `json:"egressEntries"`
}

// Status reports the agent's current state.
func (a *Agent) Status() Status {
	a.mu.RLock()
	defer a.mu.RUnlock()
	st := Status{
		Node:          a.cfg.NodeName,
		Revision:      a.state.revision,
		LastSync:      a.state.lastSync,
		LastError:     a.state.lastError,
		Policies:      a.state.policyCount,
		PolicyErrors:  a.state.policyErrs,
		XDSVersion:    a.state.xdsVersion,
		ProxyReady:    a.state.proxyReady,
		ProxyError:    a.state.proxyError,
		XDS:           a.xds.Status(),
		FlowsBuffered: a.ring.Len(),
	}
	st.FlowsDelivered = a.ring.Written()
	st.Mode = "standalone"
	if a.cfg.Kubernetes() {
		st.Mode = "kubernetes"
	}
	st.RemoteEndpoints = a.state.remoteEndpoints
	st.ConfigError = a.state.configError
	if a.src != nil {
		st.SourcesStaleSince = a.src.staleSince()
		st.SourcesSynced = a.src.synced()
	}
	if p := a.state.plan; p != nil {
		for _, id := range p.Identities {
			if !id.ID.IsReserved() && !id.ID.IsLocal() {
				st.Identities++
			}
		}
	}
	st.Endpoints = []EndpointStatus{}
	if p := a.state.plan; p != nil {
		for i := range p.Endpoints {
			pe := &p.Endpoints[i]
			es := EndpointStatus{
				Namespace: pe.Namespace, Name: pe.Name, Identity: pe.Identity,
				IngressEnforced: pe.Ingress.Enforced, EgressEnforced: pe.Egress.Enforced,
				IngressEntries: len(pe.Ingress.Entries), EgressEntries: len(pe.Egress.Entries),
			}
			for k, idx := range a.state.ifaces {
				if k.Namespace == pe.Namespace && k.Name == pe.Name {
					es.Ifindex = idx
				}
			}
			st.Endpoints = append(st.Endpoints, es)
		}
	}
	return st
}

func (a *Agent) serveAPI(ctx context.Context) error {
	ln, err := listenUnix(filepath.Join(a.cfg.RunDir, APISocket))
	if err != nil {
		return fmt.Errorf("listen agent API: %w", err)
	}
	return serveHTTP(ctx, ln, a.APIHandler())
}

// APIHandler is the local API the CLI uses:
//
//	GET /v1/status                    Status as JSON
//	GET /v1/plan                      the Plan in force as JSON
//	GET /v1/flows?last=N&follow=true  flows as JSON lines; filters: verdict,
//	                                  namespace, pod, protocol, port, l7,
//	                                  dns-name (pattern), rcode (repeatable)
//	GET /v1/xds/resources?node=NAME   the xDS resources served to the proxy
//	POST /v1/fqdn/flush?name=&endpoint= drop FQDN cache entries (dns_api.go)
func (a *Agent) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.Status())
	})
	mux.HandleFunc("GET /v1/plan", func(w http.ResponseWriter, r *http.Request) {
		a.mu.RLock()
		p := a.state.plan
		a.mu.RUnlock()
		if p == nil {
			http.Error(w, "no plan yet", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("GET /v1/flows", a.serveFlows)
	mux.HandleFunc("GET "+envoy.IntendedResourcesPath, a.serveIntended)
	a.registerDNSAPI(mux)
	a.registerDNSFlushAPI(mux)
	a.registerCNIAPI(mux)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ParseFlowQuery reads a flow filter and options from URL query values; the
// CLI builds the same query. Errors name the parameter.
func ParseFlowQuery(q map[string][]string) (flt flow.Filter, last int, follow bool, err error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	for _, v := range q["verdict"] {
		for _, s := range strings.Split(v, ",") {
			vd, perr := flow.ParseVerdict(s)
			if perr != nil {
				return flt, 0, false, fmt.Errorf("verdict: %w", perr)
			}
			flt.Verdicts = append(flt.Verdicts, vd)
		}
	}
	flt.Namespace = get("namespace")
	flt.Pod = get("pod")
	flt.Protocol = get("protocol")
	flt.L7 = get("l7")
	if flt, err = flt.WithDNS(get("dns-name"), q["rcode"]); err != nil {
		return flt, 0, false, err
	}
	if s := get("port"); s != "" {
		n, perr := strconv.ParseUint(s, 10, 16)
		if perr != nil {
			return flt, 0, false, fmt.Errorf("port %q: want 0-65535", s)
		}
		flt.Port = uint16(n)
	}
	last = 20
	if s := get("last"); s != "" {
		n, perr := strconv.Atoi(s)
		if perr != nil || n < 0 {
			return flt, 0, false, fmt.Errorf("last %q: want a non-negative number", s)
		}
		last = n
	}
	if s := get("follow"); s != "" {
		b, perr := strconv.ParseBool(s)
		if perr != nil {
			return flt, 0, false, fmt.Errorf("follow %q: want true or false", s)
		}
		follow = b
	}
	if err := flt.Validate(); err != nil {
		return flt, 0, false, err
	}
	return flt, last, follow, nil
}

func (a *Agent) serveFlows(w http.ResponseWriter, r *http.Request) {
	flt, last, follow, err := ParseFlowQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !follow {
		for _, f := range a.ring.Last(last, flt) {
			_ = enc.Encode(f)
		}
		return
	}
	fl, _ := w.(http.Flusher)
	for f := range a.ring.Follow(r.Context(), flt, last) {
		if err := enc.Encode(f); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

// serveIntended returns the resources the agent serves to its proxy, for
// `moat envoy status|diff`.
func (a *Agent) serveIntended(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if node != "" && node != a.cfg.NodeName {
		http.Error(w, fmt.Sprintf("node %q: this agent serves node %q", node, a.cfg.NodeName), http.StatusNotFound)
		return
	}
	a.mu.RLock()
	res, version := a.intended, a.state.xdsVersion
	a.mu.RUnlock()
	in := &envoy.IntendedResources{Node: a.cfg.NodeName, Version: version}
	if res != nil {
		in.Resources = res.ByType()
	}
	b, err := envoy.MarshalIntended(in)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
