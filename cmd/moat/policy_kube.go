package main

// policy_kube.go owns `moat policy trace|validate --kubeconfig`: the policy
// tooling evaluated against live cluster state. Pods, namespaces, nodes,
// the apiserver's addresses and every policy kind are read once through
// k8s.Snapshot (the agent's own conversion), identities from the cluster's
// Identity objects; the output is the standalone mode's.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/k8s"
	"github.com/moatnet/moat/k8s/identity"
	"github.com/moatnet/moat/policy"
)

// kubeInputs are the flags of the live-cluster mode.
type kubeInputs struct {
	kubeconfig string
	context    string
	node       string
}

func (k *kubeInputs) register(cmd *cobra.Command, withNode bool) {
	f := cmd.Flags()
	f.StringVar(&k.kubeconfig, "kubeconfig", "", "evaluate against the live cluster of this kubeconfig instead of files")
	f.StringVar(&k.context, "context", "", "kubeconfig context (with --kubeconfig; default: the current one)")
	if withNode {
		f.StringVar(&k.node, "node", "", "with --kubeconfig: compile the view of this node (default: the node of the --from pod)")
	}
}

// clients builds the clients of the kubeconfig.
func (k *kubeInputs) clients() (kubernetes.Interface, dynamic.Interface, error) {
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: k.kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: k.context}).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("--kubeconfig %s: %w", k.kubeconfig, err)
	}
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "moat-cli"
	rc.QPS, rc.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("create dynamic client: %w", err)
	}
	return cs, dyn, nil
}

// cliNodeName names the node of a snapshot that no pod is on, when the
// caller gives none: every pod is then remote unless promoted.
const cliNodeName = "moat-cli (no node)"

// kubeSnapshot is a compiled snapshot of the live cluster.
type kubeSnapshot struct {
	plan   *policy.Plan
	res    *k8s.SnapshotResult
	alloc  *clusterAllocator
	node   string
	locals map[string]bool
}

// snapshot reads the cluster and compiles the view of node, with the pods
// named in locals ("ns/name") compiled as local endpoints wherever they
// run, so that trace can evaluate both ends' policies.
func (k *kubeInputs) snapshot(ctx context.Context, locals []policy.TracePeer) (*kubeSnapshot, error) {
	cs, dyn, err := k.clients()
	if err != nil {
		return nil, err
	}
	node := k.node
	if node == "" {
		for _, p := range locals {
			if p.Name == "" {
				continue
			}
			n, err := k8s.PodNode(ctx, cs, p.Namespace, p.Name)
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("pod %s/%s: not found in the cluster", p.Namespace, p.Name)
			}
			if err != nil {
				return nil, err
			}
			if n != "" {
				node = n
				break
			}
		}
	}
	if node == "" {
		node = cliNodeName
	}
	alloc, err := newClusterAllocator(ctx, dyn)
	if err != nil {
		return nil, err
	}
	c := policy.NewCompiler(policy.Options{}, alloc)
	sink := &promoteSink{Compiler: c, local: map[string]bool{}}
	for _, p := range locals {
		if p.Name != "" {
			sink.local[p.Namespace+"/"+p.Name] = true
		}
	}
	res, err := k8s.Snapshot(ctx, cs, dyn, k8s.Config{NodeName: node}, sink)
	if err != nil {
		return nil, err
	}
	return &kubeSnapshot{plan: c.Plan(), res: res, alloc: alloc, node: node, locals: sink.local}, nil
}

// warnings tells, on w, what in the cluster the trace could not take as it
// is: policy objects with errors (not in force), label sets that have no
// Identity yet, and the Sink's errors.
func (s *kubeSnapshot) warnings(w io.Writer) {
	if n := len(s.res.PolicyErrors); n > 0 {
		fmt.Fprintf(w, "warning: %d policy object(s) with errors are not in force as written (moat policy validate --kubeconfig)\n", n)
	}
	for _, e := range s.res.Report.Errors {
		fmt.Fprintf(w, "warning: %v\n", e)
	}
	for _, u := range s.alloc.unallocated() {
		fmt.Fprintf(w, "warning: no Identity object for %s yet: numbered %d for this trace only\n", u.labels, u.id)
	}
}

// promoteSink compiles the named remote pods as local endpoints.
type promoteSink struct {
	*policy.Compiler
	local map[string]bool
}

// UpsertRemoteEndpoint compiles a promoted pod as a local endpoint.
func (p *promoteSink) UpsertRemoteEndpoint(ep policy.Endpoint) error {
	if p.local[ep.Namespace+"/"+ep.Name] {
		return p.Compiler.UpsertEndpoint(ep)
	}
	return p.Compiler.UpsertRemoteEndpoint(ep)
}

// DeleteRemoteEndpoint deletes a promoted pod's local endpoint.
func (p *promoteSink) DeleteRemoteEndpoint(namespace, name string) (bool, error) {
	if p.local[namespace+"/"+name] {
		return p.Compiler.DeleteEndpoint(namespace, name)
	}
	return p.Compiler.DeleteRemoteEndpoint(namespace, name)
}

// clusterAllocator numbers label sets as the cluster does: the number of
// the label set's Identity object when there is one. A label set without
// one (no agent has allocated it yet) gets the lowest number no Identity
// holds, for this run only, and is reported. It never writes to the API.
type clusterAllocator struct {
	byKey   map[string]policy.ID
	labels  map[policy.ID]policy.Labels
	cluster map[policy.ID]bool
	local   []unallocatedID
	next    policy.ID
}

type unallocatedID struct {
	id     policy.ID
	labels string
}

var _ policy.Allocator = (*clusterAllocator)(nil)

// newClusterAllocator lists the Identity objects (none when the CRD is not
// installed).
func newClusterAllocator(ctx context.Context, dyn dynamic.Interface) (*clusterAllocator, error) {
	a := &clusterAllocator{byKey: map[string]policy.ID{}, labels: map[policy.ID]policy.Labels{}, cluster: map[policy.ID]bool{}, next: policy.IDFirstAllocated}
	list, err := dyn.Resource(identity.Resource).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", identity.Resource.GroupResource(), err)
	}
	for i := range list.Items {
		if err := a.add(&list.Items[i]); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *clusterAllocator) add(u *unstructured.Unstructured) error {
	o, err := identity.FromUnstructured(u)
	if err != nil {
		return err
	}
	ls, err := o.Labels()
	if err != nil {
		return fmt.Errorf("identity %s: %w", o.Name, err)
	}
	a.byKey[ls.Key()] = o.ID
	a.labels[o.ID] = ls
	a.cluster[o.ID] = true
	return nil
}

// Allocate implements policy.Allocator.
func (a *clusterAllocator) Allocate(ls policy.Labels) (policy.ID, error) {
	key := ls.Key()
	if id, ok := a.byKey[key]; ok {
		return id, nil
	}
	for a.cluster[a.next] || a.labels[a.next] != nil {
		a.next++
	}
	if a.next >= policy.IDLocalFlag {
		return 0, fmt.Errorf("allocate identity for %s: identity space exhausted", key)
	}
	id := a.next
	a.byKey[key] = id
	a.labels[id] = ls
	a.local = append(a.local, unallocatedID{id: id, labels: key})
	return id, nil
}

// Release implements policy.Allocator: numbers stay for the run.
func (a *clusterAllocator) Release(policy.ID) error { return nil }

// Lookup implements policy.Allocator.
func (a *clusterAllocator) Lookup(id policy.ID) (policy.Labels, bool) {
	ls, ok := a.labels[id]
	return ls, ok
}

// unallocated returns the label sets numbered locally, when the cluster
// has Identity objects (with none at all, the CLI's numbers are simply the
// standalone mode's and nothing is worth a warning).
func (a *clusterAllocator) unallocated() []unallocatedID {
	if len(a.cluster) == 0 {
		return nil
	}
	return a.local
}

// validateKube reports every live policy object's problems, one line per
// field error, each naming the object's kind, namespace and name.
func validateKube(ctx context.Context, k *kubeInputs, stdout, stderr io.Writer) error {
	snap, err := k.snapshot(ctx, nil)
	if err != nil {
		return err
	}
	var lines []string
	for _, pe := range snap.res.PolicyErrors {
		var list policy.ErrorList
		if errors.As(pe.Err, &list) {
			for _, fe := range list {
				lines = append(lines, fe.Error())
			}
			continue
		}
		lines = append(lines, pe.Err.Error())
	}
	for _, e := range snap.res.Report.Errors {
		lines = append(lines, e.Error())
	}
	for _, l := range lines {
		fmt.Fprintln(stderr, l)
	}
	if len(lines) > 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("%d error(s) found in %d policy object(s)", len(lines), len(snap.res.PolicyErrors))}
	}
	fmt.Fprintf(stdout, "%d policies valid (%s)\n", snap.res.Policies, strings.Join(snap.res.Kinds, ", "))
	return nil
}
