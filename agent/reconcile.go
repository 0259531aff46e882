package agent

import (
	"context"
	"crypto/sha256"
	"net/netip"
	"slices"
	"sort"

	"errors"
	"fmt"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"strconv"
	"time"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/xds"
)

// refreshSources feeds changed policies and endpoints into the incremental
// compiler. Bad input is reported and leaves what is enforced untouched.
func (a *Agent) refreshSources(ctx context.Context) (changed bool) {
	pchanged, perrs := a.policies.refresh()
	msgs := make([]string, 0, len(perrs))
	for _, err := range perrs {
		msgs = append(msgs, err.Error())
	}
	if len(perrs) > 0 {
		a.log.Warn("policy errors: previous version of each bad file stays in force", "errors", errors.Join(perrs...))
	}
	a.m.policyErrors.Set(float64(len(perrs)))
	if pchanged {
		a.applyPolicies(a.policies.policies())
		changed = true
	}

	eps, echanged, err := a.endpoints.refresh()
	if err != nil {
		msgs = append(msgs, err.Error())
		a.log.Warn("endpoints file error: previous endpoints stay in force", "err", err)
	}
	if echanged && eps != nil {
		if err := a.applyEndpoints(eps); err != nil {
			msgs = append(msgs, err.Error())
			a.log.Error("apply endpoints", "err", err)
		}
		changed = true
	}
	a.mu.Lock()
	a.state.policyErrs = msgs
	a.mu.Unlock()
	return changed
}

// applyPolicies upserts new and changed policies and deletes removed ones.
func (a *Agent) applyPolicies(pols []policy.Policy) {
	want := make(map[policyKey]policy.Policy, len(pols))
	for _, p := range pols {
		k := keyOf(&p)
		if _, dup := want[k]; dup {
			a.log.Warn("policy "+p.Ref(), "err", errDuplicatePolicy, "file", p.Source.File)
		}
		want[k] = p
	}
	a.mu.RLock()
	applied := a.appliedPolicies
	a.mu.RUnlock()
	for k := range applied {
		if _, ok := want[k]; !ok {
			a.compiler.DeletePolicy(k.kind, k.namespace, k.name)
		}
	}
	for _, p := range want {
		a.compiler.UpsertPolicy(p)
	}
	a.mu.Lock()
	a.appliedPolicies = want
	a.state.policyCount = len(want)
	a.mu.Unlock()
	a.m.policies.Set(float64(len(want)))
}

// applyEndpoints brings the compiler's endpoints and namespaces in line with
// the endpoints file.
func (a *Agent) applyEndpoints(f *policy.EndpointsFile) error {
	var errs []error
	ecfg := datapath.DefaultEndpointConfig()
	if a.eps != nil {
		ecfg = a.eps.Config()
	}
	node := StandaloneNode(f.Node, ecfg)
	a.compiler.SetNode(node)
	for _, ns := range f.Namespaces {
		if err := a.compiler.UpsertNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	want := make(map[datapath.EndpointKey]policy.Endpoint, len(f.Endpoints))
	for _, ep := range f.Endpoints {
		want[datapath.EndpointKey{Namespace: ep.Namespace, Name: ep.Name}] = ep
	}
	a.mu.RLock()
	applied := a.appliedEndpoints
	a.mu.RUnlock()
	for k := range applied {
		if _, ok := want[k]; !ok {
			if _, err := a.compiler.DeleteEndpoint(k.Namespace, k.Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, ep := range f.Endpoints {
		if err := a.compiler.UpsertEndpoint(ep); err != nil {
			errs = append(errs, err)
		}
	}
	a.mu.Lock()
	a.appliedEndpoints = want
	a.mu.Unlock()
	return errors.Join(errs...)
}

// proxyPending reports whether the plan has HTTP redirects that the proxy
// has not ACKed yet, so the loop keeps retrying.
func (a *Agent) proxyPending() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.state.plan != nil && hasHTTPRedirects(a.state.plan) && !a.state.proxyReady
}

func hasHTTPRedirects(p *policy.Plan) bool {
	for i := range p.Endpoints {
		if len(p.Endpoints[i].Ingress.HTTP) > 0 || len(p.Endpoints[i].Egress.HTTP) > 0 {
			return true
		}
	}
	return false
}

// reconcile makes the node match the compiler's current plan, in the order
// that never opens a hole: endpoints exist and programs are attached, the
// proxy has ACKed the listeners, and only then are redirects written to the
// policy maps. A redirect whose listener is not ACKed is written with no
// proxy port, so its traffic is dropped (fail closed).
func (a *Agent) reconcile(ctx context.Context) error {
	start := time.Now()
	plan := a.compiler.Plan()

	a.mu.RLock()
	desired := a.appliedEndpoints
	prevIfaces := a.state.ifaces
	a.mu.RUnlock()

	// Programs go on right after each endpoint exists, before its config is
	// in the maps: an attached interface without config drops everything,
	// so a new endpoint is closed until Sync opens what policy allows.
	ifaces := make(map[datapath.EndpointKey]int, len(desired))
	var errs []error
	for k, ep := range desired {
		link, err := a.eps.Ensure(ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("ensure endpoint %s: %w", k, err))
			a.m.endpointRegenerations.WithLabelValues("failure").Inc()
			continue
		}
		if err := a.dp.Attach(link.HostIfindex); err != nil {
			errs = append(errs, fmt.Errorf("attach endpoint %s: %w", k, err))
			a.m.endpointRegenerations.WithLabelValues("failure").Inc()
			if ep.Interface == "" {
				// Fail closed: an endpoint the agent made and cannot
				// enforce is taken away rather than left forwarding.
				if rerr := a.eps.Remove(ctx, ep); rerr != nil {
					errs = append(errs, fmt.Errorf("remove unenforced endpoint %s: %w", k, rerr))
				}
			}
			continue
		}
		ifaces[k] = link.HostIfindex
		if _, had := prevIfaces[k]; !had {
			a.m.endpointRegenerations.WithLabelValues("success").Inc()
		}
	}

	proxies, ready, perr := a.pushProxyConfig(ctx, plan)
	if err := a.dp.Sync(plan, ifaces, proxies); err != nil {
		errs = append(errs, fmt.Errorf("sync policy maps: %w", err))
	} else if ready && perr == nil {
		// Maps and proxy hold this Plan: local identities it dropped may be reused.
		a.compiler.ConfirmApplied(plan.Generation)
	}

	// Endpoints removed from the file: detach and delete after the maps no
	// longer reference them.
	for k, idx := range prevIfaces {
		if _, ok := desired[k]; ok {
			continue
		}
		if err := a.dp.Detach(idx); err != nil {
			errs = append(errs, fmt.Errorf("detach endpoint %s: %w", k, err))
		}
		if err := a.eps.Remove(ctx, policy.Endpoint{Namespace: k.Namespace, Name: k.Name}); err != nil {
			errs = append(errs, fmt.Errorf("remove endpoint %s: %w", k, err))
		}
	}

	err := errors.Join(errs...)
	outcome := "success"
	if err != nil {
		outcome = "failure"
	}
	a.m.reconciles.WithLabelValues(outcome).Inc()
	a.m.reconcileSeconds.Observe(time.Since(start).Seconds())
	a.m.endpoints.Set(float64(len(ifaces)))

	a.mu.Lock()
	a.state.plan = plan
	a.state.enricher = buildEnricher(plan, desired)
	a.state.ifaces = ifaces
	a.state.byIfindex = make(map[int]datapath.EndpointKey, len(ifaces))
	for k, i := range ifaces {
		a.state.byIfindex[i] = k
	}
	a.state.revision++
	a.state.proxyReady = ready
	a.state.proxyError = ""
	if perr != nil {
		a.state.proxyError = perr.Error()
	}
	a.state.lastSync = time.Now()
	a.mu.Unlock()
	if err == nil {
		a.setLastError(nil)
	}
	return err
}

// retryProxy pushes the plan in force to the proxy again and, once the
// proxy has ACKed it, writes the redirects' proxy ports into the maps.
func (a *Agent) retryProxy(ctx context.Context) error {
	a.mu.RLock()
	plan, ifaces := a.state.plan, a.state.ifaces
	a.mu.RUnlock()
	proxies, ready, perr := a.pushProxyConfig(ctx, plan)
	var err error
	if ready {
		if err = a.dp.Sync(plan, ifaces, proxies); err != nil {
			err = fmt.Errorf("sync policy maps: %w", err)
		}
	}
	a.mu.Lock()
	a.state.proxyReady = ready && err == nil
	a.state.proxyError = ""
	if perr != nil {
		a.state.proxyError = perr.Error()
	}
	a.mu.Unlock()
	if err == nil {
		a.setLastError(nil)
	}
	return err
}

// pushProxyConfig translates the plan's HTTP rules, serves them over xDS and
// waits for the proxy's ACK. It returns the proxy ports that may be written
// into redirect entries: none unless the proxy ACKed this version.
func (a *Agent) pushProxyConfig(ctx context.Context, plan *policy.Plan) (datapath.ProxyPorts, bool, error) {
	proxies := datapath.ProxyPorts{}
	if !hasHTTPRedirects(plan) {
		return proxies, true, nil
	}
	pathMode, _ := httpnorm.ParseMode(a.cfg.HTTPPaths) // checked by Config.Validate
	res, err := envoy.Translate(plan, envoy.Config{
		NodeName:        a.cfg.NodeName,
		EgressHTTPPort:  a.cfg.EgressHTTPPort,
		IngressHTTPPort: a.cfg.IngressHTTPPort,
		PathMode:        pathMode,
	})
	if err != nil {
		a.m.redirectsFailClosed.WithLabelValues("translate").Inc()
		return proxies, false, fmt.Errorf("translate http rules: %w", err)
	}
	byType := res.ByType()
	sum, err := resourcesDigest(byType)
	if err != nil {
		return proxies, false, err
	}
	a.mu.Lock()
	version := a.state.xdsVersion
	unchanged := version != "" && sum == a.intendedSum
	a.mu.Unlock()
	if !unchanged {
		// A new version only when the resources changed: an unchanged
		// plan re-waits for the ACK of the version already served.
		a.mu.Lock()
		a.xdsSeq++
		version = strconv.FormatUint(a.xdsSeq, 10)
		a.mu.Unlock()
		if err := a.xds.SetResources(ctx, a.cfg.NodeName, version, byType); err != nil {
			a.m.redirectsFailClosed.WithLabelValues("snapshot").Inc()
			return proxies, false, fmt.Errorf("set xds resources: %w", err)
		}
		a.mu.Lock()
		a.state.xdsVersion = version
		a.intended = res
		a.intendedSum = sum
		a.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, time.Duration(a.cfg.ACKTimeout))
	defer cancel()
	if err := a.xds.WaitForACK(wctx, a.cfg.NodeName, version); err != nil {
		reason := "timeout"
		var nack *xds.NACKError
		switch {
		case errors.Is(err, xds.ErrNotSubscribed):
			reason = "no-proxy"
		case errors.As(err, &nack):
			reason = "nack"
		}
		a.m.redirectsFailClosed.WithLabelValues(reason).Inc()
		return proxies, false, fmt.Errorf("proxy did not ACK version %s (HTTP redirects drop until it does): %w", version, err)
	}
	proxies[datapath.ProxyKey{Direction: policy.Egress, L7: policy.L7HTTP}] = a.cfg.EgressHTTPPort
	proxies[datapath.ProxyKey{Direction: policy.Ingress, L7: policy.L7HTTP}] = a.cfg.IngressHTTPPort
	return proxies, true, nil
}

// buildEnricher maps every endpoint address to its flow metadata.
func buildEnricher(plan *policy.Plan, eps map[datapath.EndpointKey]policy.Endpoint) map[string]flow.Endpoint {
	out := make(map[string]flow.Endpoint)
	for i := range plan.Endpoints {
		pe := &plan.Endpoints[i]
		ep := eps[datapath.EndpointKey{Namespace: pe.Namespace, Name: pe.Name}]
		fe := flow.Endpoint{
			Identity:  uint32(pe.Identity),
			Namespace: pe.Namespace,
			PodName:   pe.Name,
			Workload:  workloadOf(ep),
			App:       appOf(ep.Labels),
		}
		for _, addr := range pe.Addresses {
			out[addr.String()] = fe
		}
	}
	return out
}

func appOf(labels map[string]string) string {
	for _, k := range []string{"app.kubernetes.io/name", "k8s-app", "app"} {
		if v := labels[k]; v != "" {
			return v
		}
	}
	return ""
}

// workloadOf names an endpoint's workload: its app label in standalone mode
// (there are no owner references), else the endpoint's own name.
func workloadOf(ep policy.Endpoint) string {
	if app := appOf(ep.Labels); app != "" {
		return app
	}
	return ep.Name
}

// resourcesDigest hashes resources in a stable order and encoding.
func resourcesDigest(byType map[resource.Type][]types.Resource) ([32]byte, error) {
	typeURLs := make([]string, 0, len(byType))
	for t := range byType {
		typeURLs = append(typeURLs, t)
	}
	sort.Strings(typeURLs)
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, t := range typeURLs {
		h.Write([]byte(t))
		for _, r := range byType[t] {
			b, err := opts.Marshal(r)
			if err != nil {
				return [32]byte{}, fmt.Errorf("hash %s resource: %w", t, err)
			}
			h.Write(b)
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// StandaloneNode returns the node as standalone mode compiles it: traffic
// the node itself sends to an endpoint leaves from the veth gateway address,
// so the gateway addresses are host addresses like the node's own. The agent
// and `moat policy compile|trace` both use it, so they agree.
func StandaloneNode(n policy.Node, ecfg datapath.EndpointConfig) policy.Node {
	n.Addresses = append([]netip.Addr(nil), n.Addresses...)
	for _, addr := range []netip.Addr{ecfg.GatewayIPv4, ecfg.GatewayIPv6} {
		if addr.IsValid() && !slices.Contains(n.Addresses, addr) {
			n.Addresses = append(n.Addresses, addr)
		}
	}
	return n
}
