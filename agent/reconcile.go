package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/internal/httpnorm"
	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policyload"
	"github.com/moatnet/moat/xds"
)

// refreshSources feeds changed policies and endpoints into the incremental
// compiler. Bad input is reported and leaves what is enforced untouched.
func (a *Agent) refreshSources(ctx context.Context) (changed bool) {
	pchanged, perrs := a.policies.refresh()
	problems := a.policyProblems(perrs)
	if pchanged {
		a.applyPolicies(a.policies.policies())
		changed = true
	}

	eps, echanged, err := a.endpoints.refresh()
	if err != nil {
		problems = append(problems, sourceProblem{err: err, previous: a.endpoints.reader.HasGood(), endpoints: true})
	}
	if echanged && eps != nil {
		a.sources.applyErr = a.applyEndpoints(eps)
		changed = true
	}
	if a.sources.applyErr != nil {
		problems = append(problems, sourceProblem{err: fmt.Errorf("apply endpoints: %w", a.sources.applyErr), previous: true, applied: true, endpoints: true})
	}
	a.reportProblems(problems)
	return changed
}

// sourceProblem is one bad policy file, a bad endpoints file, or an
// endpoints file that did not apply cleanly.
type sourceProblem struct {
	err error
	// previous: an earlier valid version of the source stays in force.
	previous  bool
	endpoints bool // the endpoints file, else a policy file or directory
	applied   bool // the content was applied, partly
	// raw: err says all (a Kubernetes object's error says itself what
	// stays in force).
	raw bool
}

// String says what the problem is and, truthfully, what is in force.
func (p sourceProblem) String() string {
	switch {
	case p.raw:
		return p.err.Error()
	case p.applied:
		return p.err.Error() + "; the rest of the endpoints file is in force"
	case p.endpoints && p.previous:
		return p.err.Error() + "; the previous version of the endpoints file stays in force"
	case p.endpoints:
		return p.err.Error() + "; no endpoints are in force (no earlier version of the file was valid)"
	case p.previous:
		return p.err.Error() + "; the previous version of this file stays in force"
	default:
		return p.err.Error() + "; nothing from this file is in force (no earlier version of it was valid)"
	}
}

// sourceReport is what the agent last said about its sources, so that it
// says each thing once; only refreshSources (policyLoop) uses it.
type sourceReport struct {
	logged   map[string]bool
	applyErr error
}

// policyProblems tells, for each policy source error, whether an earlier
// version of that file stays in force.
func (a *Agent) policyProblems(errs []error) []sourceProblem {
	out := make([]sourceProblem, 0, len(errs))
	for _, err := range errs {
		p := sourceProblem{err: err}
		var fe *policyload.FileError
		if errors.As(err, &fe) {
			p.previous = fe.Previous
		}
		out = append(out, p)
	}
	return out
}

// reportProblems logs each problem once, when it appears, and that it is
// gone when it goes; moat_policy_errors and the status show the current
// ones.
func (a *Agent) reportProblems(problems []sourceProblem) {
	msgs := make([]string, 0, len(problems))
	now := make(map[string]bool, len(problems))
	for _, p := range problems {
		msg := p.String()
		msgs = append(msgs, msg)
		now[msg] = true
		if !a.sources.logged[msg] {
			a.log.Warn("bad policy source", "problem", msg)
		}
	}
	for msg := range a.sources.logged {
		if !now[msg] {
			a.log.Info("policy source problem gone", "problem", msg)
		}
	}
	a.sources.logged = now
	a.m.policyErrors.Set(float64(len(problems)))
	a.mu.Lock()
	a.state.policyErrs = msgs
	a.mu.Unlock()
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
	if a.plumb != nil {
		ecfg = a.plumb.Config()
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

// confirmApplied tells the compiler which plans are fully applied, so that
// local identities they dropped may be reused. Only policyLoop calls it.
func (a *Agent) confirmApplied() {
	a.mu.RLock()
	gen := a.proxy.applied
	a.mu.RUnlock()
	if gen > a.confirmedGen {
		a.compiler.ConfirmApplied(gen)
		a.confirmedGen = gen
	}
}

// httpListeners returns the proxy listeners that the plan's redirects use.
func httpListeners(p *policy.Plan) map[datapath.ProxyKey]bool {
	need := map[datapath.ProxyKey]bool{}
	for i := range p.Endpoints {
		if len(p.Endpoints[i].Ingress.HTTP) > 0 {
			need[datapath.ProxyKey{Direction: policy.Ingress, L7: policy.L7HTTP}] = true
		}
		if len(p.Endpoints[i].Egress.HTTP) > 0 {
			need[datapath.ProxyKey{Direction: policy.Egress, L7: policy.L7HTTP}] = true
		}
	}
	return need
}

func hasHTTPRedirects(p *policy.Plan) bool { return len(httpListeners(p)) > 0 }

// proxyState is the redirect half of reconciliation; guarded by Agent.mu.
//
// The L3/L4 half never waits on it: reconcile writes every map at once, and
// a redirect entry gets its proxy port only when the proxy has ACKed the
// listener that receives it (live). Until then the entry is written without
// a port and its traffic drops (fail closed); proxyLoop rewrites it once the
// ACK comes. A listener stops being live when the proxy NACKs a version, or
// does not ACK it within ACKTimeout: its redirects drop again rather than
// keep running rules the proxy never confirmed.
type proxyState struct {
	version  string    // xDS version served for the plan in force ("" = none)
	pushedAt time.Time // when version was served
	acked    string    // the last version the proxy ACKed
	need     map[datapath.ProxyKey]bool
	live     map[datapath.ProxyKey]bool
	failed   string // why version fails closed ("" = it does not)
	err      string
	written  datapath.ProxyPorts // proxy ports of the last successful Sync
	// syncedGen is the Generation of the plan the last successful Sync
	// wrote; applied the latest Generation that both the maps and the
	// proxy hold, for policyLoop to confirm to the compiler (which is not
	// safe for concurrent use, so proxyLoop does not call it).
	syncedGen, applied uint64
}

// markAppliedLocked records the plan in force as applied when its Sync
// succeeded and the proxy ACKed its resources (or it has no redirects).
func (a *Agent) markAppliedLocked() {
	p := a.state.plan
	if p == nil || a.proxy.syncedGen != p.Generation {
		return
	}
	if len(a.proxy.need) > 0 && (a.proxy.failed != "" || a.proxy.acked != a.proxy.version) {
		return
	}
	a.proxy.applied = max(a.proxy.applied, p.Generation)
}

// redirectPorts returns the proxy ports that redirect entries may carry now:
// those of live listeners that the plan uses.
func (a *Agent) redirectPorts() datapath.ProxyPorts {
	out := datapath.ProxyPorts{}
	for k := range a.proxy.need {
		if !a.proxy.live[k] {
			continue
		}
		switch k.Direction {
		case policy.Egress:
			out[k] = a.cfg.EgressHTTPPort
		case policy.Ingress:
			out[k] = a.cfg.IngressHTTPPort
		}
	}
	a.addDNSPort(out)
	return out
}

// proxyReadyLocked reports whether every redirect of the plan in force has
// its proxy port in the maps.
func (a *Agent) proxyReadyLocked() bool {
	if len(a.proxy.need) == 0 {
		return true
	}
	if a.proxy.failed != "" || a.proxy.acked != a.proxy.version {
		return false
	}
	for k := range a.proxy.need {
		if a.proxy.written[k] == 0 {
			return false
		}
	}
	return true
}

// reconcile makes the node match the compiler's current plan, in the order
// that never opens a hole and never makes L3/L4 wait on the proxy:
//
//  1. endpoints exist and programs are attached (an attached interface that
//     is not in the maps yet drops everything);
//  2. every map is written at once: ipcache, L3/L4 allows and denies, and
//     redirects, which carry a proxy port only for listeners the proxy has
//     already ACKed (others drop: fail closed);
//  3. the proxy's resources are served, and proxyLoop writes the redirects'
//     ports when the proxy ACKs them;
//  4. endpoints removed from the file are detached and deleted.
func (a *Agent) reconcile(ctx context.Context) error {
	start := time.Now()
	a.mu.RLock()
	desired := a.appliedEndpoints
	prevIfaces := a.state.ifaces
	a.mu.RUnlock()

	ifaces, errs := a.attachEndpoints(ctx, desired, prevIfaces)
	if err := a.syncServiceScope(desired); err != nil {
		errs = append(errs, err)
	}

	a.syncMu.Lock()
	// The Plan is taken under syncMu: a Plan the DNS proxy's learning wrote
	// meanwhile (dns.go) is never overwritten by an older one.
	a.compMu.Lock()
	plan := a.compiler.Plan()
	a.compMu.Unlock()
	a.dnsPlanSynced(plan)
	a.mu.Lock()
	a.state.plan = plan
	a.state.enricher = buildEnricher(plan, desired)
	a.state.ifaces = ifaces
	a.state.byIfindex = make(map[int]datapath.EndpointKey, len(ifaces))
	for k, i := range ifaces {
		a.state.byIfindex[i] = k
	}
	a.proxy.need = httpListeners(plan)
	proxies := a.redirectPorts()
	a.mu.Unlock()
	if err := a.maps.Sync(plan, ifaces, proxies); err != nil {
		errs = append(errs, fmt.Errorf("sync policy maps: %w", err))
	} else {
		a.mu.Lock()
		a.proxy.written = proxies
		a.proxy.syncedGen = plan.Generation
		a.mu.Unlock()
	}
	a.syncMu.Unlock()

	perr := a.pushProxyConfig(ctx, plan)
	a.mu.RLock()
	if perr != nil && a.proxy.failed == "snapshot" {
		// The xDS server refused the resources (a transient failure, unlike
		// a translation error): the next poll reconciles again.
		errs = append(errs, perr)
	}
	a.mu.RUnlock()

	// Endpoints removed from the file: detach and delete after the maps no
	// longer reference them.
	for k, idx := range prevIfaces {
		if _, ok := desired[k]; ok {
			continue
		}
		if err := a.maps.Detach(idx); err != nil {
			errs = append(errs, fmt.Errorf("detach endpoint %s: %w", k, err))
		}
		if err := a.plumb.Remove(ctx, policy.Endpoint{Namespace: k.Namespace, Name: k.Name}); err != nil {
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
	a.state.revision++
	a.state.lastSync = time.Now()
	if perr != nil {
		a.proxy.err = perr.Error()
	}
	a.markAppliedLocked()
	a.publishProxyLocked()
	a.mu.Unlock()
	if err == nil {
		a.setLastError(nil)
	}
	a.kickProxy()
	if a.cni != nil {
		a.cni.signalReconciled()
	}
	return err
}

// attachEndpoints ensures every desired endpoint and attaches the programs
// to its host veth. An endpoint the agent made and cannot enforce is taken
// away rather than left forwarding.
func (a *Agent) attachEndpoints(ctx context.Context, desired map[datapath.EndpointKey]policy.Endpoint, prev map[datapath.EndpointKey]int) (map[datapath.EndpointKey]int, []error) {
	ifaces := make(map[datapath.EndpointKey]int, len(desired))
	var errs []error
	for k, ep := range desired {
		link, err := a.plumb.Ensure(ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("ensure endpoint %s: %w", k, err))
			a.m.endpointRegenerations.WithLabelValues("failure").Inc()
			continue
		}
		if err := a.maps.Attach(link.HostIfindex); err != nil {
			errs = append(errs, fmt.Errorf("attach endpoint %s: %w", k, err))
			a.m.endpointRegenerations.WithLabelValues("failure").Inc()
			if ep.Interface == "" {
				if rerr := a.plumb.Remove(ctx, ep); rerr != nil {
					errs = append(errs, fmt.Errorf("remove unenforced endpoint %s: %w", k, rerr))
				}
			}
			continue
		}
		ifaces[k] = link.HostIfindex
		a.noteEndpointNetns(k, link.Netns)
		if _, had := prev[k]; !had {
			a.m.endpointRegenerations.WithLabelValues("success").Inc()
		}
	}
	return ifaces, errs
}

// publishProxyLocked copies the proxy state into what the API reports.
func (a *Agent) publishProxyLocked() {
	a.state.xdsVersion = a.proxy.version
	a.state.proxyReady = a.proxyReadyLocked()
	a.state.proxyError = a.proxy.err
}

// kickProxy wakes proxyLoop: a new version to wait for.
func (a *Agent) kickProxy() {
	select {
	case a.proxyKick <- struct{}{}:
	default:
	}
}

// pushProxyConfig translates the plan's HTTP rules and serves them over xDS
// under a new version when they changed. It does not wait: proxyLoop does.
// A failure fails the redirects closed.
func (a *Agent) pushProxyConfig(ctx context.Context, plan *policy.Plan) error {
	if !hasHTTPRedirects(plan) {
		a.mu.Lock()
		a.proxy.version, a.proxy.failed, a.proxy.err = "", "", ""
		a.mu.Unlock()
		return nil
	}
	pathMode, _ := httpnorm.ParseMode(a.cfg.HTTPPaths) // checked by Config.Validate
	res, err := envoy.Translate(plan, envoy.Config{
		NodeName:        a.cfg.NodeName,
		EgressHTTPPort:  a.cfg.EgressHTTPPort,
		IngressHTTPPort: a.cfg.IngressHTTPPort,
		PathMode:        pathMode,
	})
	if err != nil {
		return a.failProxy("", "translate", fmt.Errorf("translate http rules: %w", err))
	}
	byType := res.ByType()
	sum, err := resourcesDigest(byType)
	if err != nil {
		return a.failProxy("", "translate", err)
	}
	a.mu.Lock()
	if a.proxy.version != "" && sum == a.intendedSum {
		// Unchanged resources: the version already served stands.
		a.mu.Unlock()
		return nil
	}
	a.xdsSeq++
	version := strconv.FormatUint(a.xdsSeq, 10)
	a.mu.Unlock()
	if err := a.proxyCfg.SetResources(ctx, a.cfg.NodeName, version, byType); err != nil {
		return a.failProxy("", "snapshot", fmt.Errorf("set xds resources: %w", err))
	}
	a.mu.Lock()
	a.proxy.version = version
	a.proxy.pushedAt = time.Now()
	a.proxy.failed, a.proxy.err = "", ""
	a.intended = res
	a.intendedSum = sum
	a.mu.Unlock()
	return nil
}

// failProxy fails the redirects of version (or of the plan in force, for
// "") closed: no listener is live, the maps are rewritten without proxy
// ports. reason labels moat_proxy_redirects_fail_closed_total, counted once
// per version and reason.
func (a *Agent) failProxy(version, reason string, cause error) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	if version != "" && version != a.proxy.version {
		a.mu.Unlock()
		return cause // superseded
	}
	if a.proxy.failed != reason {
		a.m.redirectsFailClosed.WithLabelValues(reason).Inc()
	}
	a.proxy.failed = reason
	a.proxy.err = fmt.Sprintf("HTTP redirects drop until the proxy ACKs: %v", cause)
	a.proxy.live = nil
	err := a.resyncLocked()
	a.publishProxyLocked()
	a.mu.Unlock()
	return errors.Join(cause, err)
}

// resyncLocked rewrites the maps when the redirect ports changed; it needs
// a.syncMu and a.mu held (a.mu is released around the Sync).
func (a *Agent) resyncLocked() error {
	proxies := a.redirectPorts()
	if maps.Equal(proxies, a.proxy.written) || a.state.plan == nil {
		return nil
	}
	plan, ifaces := a.state.plan, a.state.ifaces
	a.mu.Unlock()
	err := a.maps.Sync(plan, ifaces, proxies)
	a.mu.Lock()
	if err != nil {
		err = fmt.Errorf("sync policy maps (redirects): %w", err)
		a.state.lastError = err.Error()
		return err
	}
	a.proxy.written = proxies
	a.proxy.syncedGen = plan.Generation
	return nil
}

// proxyLoop waits for the proxy to ACK the version in force and then writes
// the redirects' proxy ports. A version not ACKed within ACKTimeout, or
// NACKed, fails closed; the loop goes on waiting, so a late ACK (or a proxy
// that connects late) still opens the redirects.
func (a *Agent) proxyLoop(ctx context.Context) error {
	poll := time.Duration(a.cfg.PollInterval)
	for {
		a.mu.RLock()
		version, pushedAt, acked, failed := a.proxy.version, a.proxy.pushedAt, a.proxy.acked, a.proxy.failed
		a.mu.RUnlock()
		if version == "" || version == acked {
			select {
			case <-ctx.Done():
				return nil
			case <-a.proxyKick:
			}
			continue
		}
		deadline := pushedAt.Add(time.Duration(a.cfg.ACKTimeout))
		err := a.waitForACK(ctx, version, deadline, failed != "")
		if ctx.Err() != nil {
			return nil
		}
		retry := false
		var nack *xds.NACKError
		switch {
		case err == nil:
			if err := a.proxyACKed(version); err != nil {
				a.log.Error("write redirects after the proxy's ACK", "version", version, "err", err)
				retry = true
			}
		case errors.Is(err, errKicked):
			continue
		case errors.As(err, &nack):
			_ = a.failProxy(version, "nack", fmt.Errorf("proxy rejected version %s: %w", version, err))
			retry = true
		case errors.Is(err, context.DeadlineExceeded):
			_ = a.failProxy(version, "timeout", fmt.Errorf("proxy did not ACK version %s within %s: %w", version, time.Duration(a.cfg.ACKTimeout), err))
		default: // not subscribed (yet), or a version the server forgot
			if !time.Now().Before(deadline) {
				reason := "no-proxy"
				if !errors.Is(err, xds.ErrNotSubscribed) {
					reason = "timeout"
				}
				_ = a.failProxy(version, reason, fmt.Errorf("proxy did not ACK version %s: %w", version, err))
			}
			retry = true
		}
		if retry {
			t := time.NewTimer(poll)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-a.proxyKick:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// errKicked ends a wait for an ACK when a newer version was served.
var errKicked = errors.New("newer proxy version")

// waitForACK waits for version's ACK until deadline (unless the version
// already failed closed: then without one) or until kicked.
func (a *Agent) waitForACK(ctx context.Context, version string, deadline time.Time, failed bool) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !failed {
		var cancelT context.CancelFunc
		wctx, cancelT = context.WithDeadline(wctx, deadline)
		defer cancelT()
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-a.proxyKick:
			cancel(errKicked)
		case <-done:
		}
	}()
	err := a.proxyCfg.WaitForACK(wctx, a.cfg.NodeName, version)
	if err != nil && errors.Is(context.Cause(wctx), errKicked) {
		return errKicked
	}
	return err
}

// proxyACKed makes the ACKed version's listeners live and writes their
// ports into the redirect entries.
func (a *Agent) proxyACKed(version string) error {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	if version != a.proxy.version {
		return nil // superseded: the next wait covers it
	}
	a.proxy.acked = version
	a.proxy.failed, a.proxy.err = "", ""
	a.proxy.live = maps.Clone(a.proxy.need)
	err := a.resyncLocked()
	if err != nil {
		a.proxy.acked = "" // retry the write
	}
	a.markAppliedLocked()
	a.publishProxyLocked()
	return err
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
