package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/policy"
)

// source is where the agent's policies and endpoints come from: files in
// standalone mode, the Kubernetes API in Kubernetes mode. Everything below
// it (the compiler, reconcile, the datapath, the proxy) is shared.
type source interface {
	// run runs the source's watches until ctx ends.
	run(ctx context.Context) error
	// changed fires when refresh has work; nil for a source that is
	// polled (policyLoop also refreshes every PollInterval).
	changed() <-chan struct{}
	// synced reports whether the source has its complete initial view:
	// until then nothing is compiled into the maps, which keep what the
	// pins hold.
	synced() bool
	// refresh feeds what changed into the compiler, records problems and
	// reports whether anything changed. Only policyLoop calls it.
	refresh(ctx context.Context, a *Agent) bool
	// staleSince returns since when the source cannot reach its origin
	// (zero: it can).
	staleSince() time.Time
}

// fileSource is standalone mode: a policy directory and an endpoints
// file, polled.
type fileSource struct{}

func (fileSource) run(context.Context) error { return nil }
func (fileSource) changed() <-chan struct{}  { return nil }
func (fileSource) synced() bool              { return true }
func (fileSource) staleSince() time.Time     { return time.Time{} }
func (fileSource) refresh(ctx context.Context, a *Agent) bool {
	return a.refreshSources(ctx)
}

// kubeSource is Kubernetes mode: the informers of package k8s, event
// driven.
type kubeSource struct {
	src *k8s.Source
	// configMap names the agent's ConfigMap ("namespace/name", "" for none).
	configMap string
}

func (k *kubeSource) run(ctx context.Context) error { return k.src.Run(ctx) }
func (k *kubeSource) changed() <-chan struct{}      { return k.src.Changed() }
func (k *kubeSource) synced() bool                  { return k.src.Synced() }
func (k *kubeSource) staleSince() time.Time         { return k.src.StaleSince() }

// kubeSink is the compiler as the k8s source feeds it: the node's
// addresses include the endpoints' veth gateways, as in standalone mode.
type kubeSink struct {
	*policy.Compiler
	ecfg datapath.EndpointConfig
}

func (s kubeSink) SetNode(n policy.Node) { s.Compiler.SetNode(StandaloneNode(n, s.ecfg)) }

func (k *kubeSource) refresh(_ context.Context, a *Agent) bool {
	r := k.src.Drain(kubeSink{Compiler: a.compiler, ecfg: a.endpointConfig()})
	var problems []sourceProblem
	for _, pe := range k.src.PolicyErrors() {
		problems = append(problems, sourceProblem{err: pe, raw: true})
	}
	for _, err := range r.Errors {
		problems = append(problems, sourceProblem{err: fmt.Errorf("apply kubernetes objects: %w", err), raw: true})
	}
	if r.ConfigChanged {
		a.checkConfigMap(k.configMap, k.src)
	}
	a.reportProblems(problems)
	if !r.Changed {
		return false
	}
	// Local pods whose host interface is known are attached (adopted, as
	// the standalone interface field does); the others are compiled into
	// the Plan and the ipcache only, until the CNI hands them over.
	want := map[datapath.EndpointKey]policy.Endpoint{}
	for _, ep := range k.src.LocalEndpoints() {
		if ep.Interface != "" {
			want[datapath.EndpointKey{Namespace: ep.Namespace, Name: ep.Name}] = ep
		}
	}
	n := k.src.PolicyCount()
	a.mu.Lock()
	a.appliedEndpoints = want
	a.state.policyCount = n
	a.state.remoteEndpoints = k.src.RemoteEndpointCount()
	a.mu.Unlock()
	a.m.policies.Set(float64(n))
	return true
}

// endpointConfig is the endpoint plumbing's config (the default before
// the node is open).
func (a *Agent) endpointConfig() datapath.EndpointConfig {
	if a.plumb != nil {
		return a.plumb.Config()
	}
	return datapath.DefaultEndpointConfig()
}

// newKubeSource builds Kubernetes mode's source over rc.
func newKubeSource(cfg Config, rc *rest.Config, log *slog.Logger) (*kubeSource, error) {
	kc := k8s.Config{NodeName: cfg.NodeName}
	if len(cfg.IdentityExcludedLabels) > 0 {
		kc.ExcludedLabels = cfg.IdentityExcludedLabels
	}
	if cfg.ConfigMap != "" {
		kc.ConfigMapNamespace, kc.ConfigMapName, _ = strings.Cut(cfg.ConfigMap, "/")
	}
	src, err := k8s.NewForConfig(rc, kc, log.With("component", "k8s"))
	if err != nil {
		return nil, fmt.Errorf("create kubernetes source: %w", err)
	}
	return &kubeSource{src: src, configMap: cfg.ConfigMap}, nil
}
