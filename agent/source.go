package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/k8s/identity"
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
	// alloc numbers label sets cluster-wide (Identity objects).
	alloc *identity.Allocator
	// configMap names the agent's ConfigMap ("namespace/name", "" for none).
	configMap string
}

func (k *kubeSource) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return k.src.Run(ctx) })
	g.Go(func() error { return k.alloc.Run(ctx) })
	return g.Wait()
}

func (k *kubeSource) changed() <-chan struct{} { return k.src.Changed() }

// synced waits for the identities too: the first Plan allocates.
func (k *kubeSource) synced() bool {
	return k.src.Synced() && k.alloc.Informer().HasSynced()
}

func (k *kubeSource) staleSince() time.Time { return k.src.StaleSince() }

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
func newKubeSource(cfg Config, rc *rest.Config, atts k8s.PodAttachments, log *slog.Logger) (*kubeSource, error) {
	kc := k8s.Config{NodeName: cfg.NodeName, Attachments: atts}
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
	ns := cfg.Namespace
	if ns == "" {
		ns = kc.ConfigMapNamespace
	}
	if ns == "" {
		ns = "kube-system"
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create dynamic client: %w", err)
	}
	alloc, err := identity.New(identity.Config{
		Dynamic: dyn, Kube: cs, Namespace: ns,
		Logger: log,
		// A label set renumbered under us (its Identity deleted and made
		// again): re-apply the pods, which take the new number.
		OnChange: func(policy.Labels, policy.ID, policy.ID) { src.ReapplyPods() },
	})
	if err != nil {
		return nil, fmt.Errorf("create identity allocator: %w", err)
	}
	return &kubeSource{src: src, alloc: alloc, configMap: cfg.ConfigMap}, nil
}
