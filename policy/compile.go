package policy

import (
	"fmt"
	"net/netip"
)

// Options tune the compiler.
type Options struct {
	// AllowHostIngress allows the node itself (IDHost) into every endpoint
	// whose ingress is enforced, like Cilium's allow-localhost=policy
	// default in Kubernetes (kubelet probes). Standalone mode defaults to
	// false: the host is a peer like any other and needs a rule.
	AllowHostIngress bool `json:"allowHostIngress,omitempty"`
}

// Input is everything a full compilation needs.
type Input struct {
	Policies   []Policy
	Endpoints  []Endpoint
	Namespaces []Namespace
	Node       Node
	// RemoteEndpoints are the endpoints of other nodes: identities and
	// ipcache entries, no Plan of their own (compile_remote.go).
	RemoteEndpoints []Endpoint
	// RemoteNodes are the other nodes' addresses (IDRemoteNode) and
	// APIServers the kube-apiserver's (IDKubeAPIServer).
	RemoteNodes []netip.Addr
	APIServers  []netip.Addr
	// Allocator gives label sets their identities; nil means a fresh
	// MemoryAllocator.
	Allocator Allocator
	// LocalAllocator numbers CIDR and FQDN identities; nil means a fresh
	// one (prefixes then numbered in sorted order).
	LocalAllocator *LocalAllocator
	Options        Options
}

// Compile turns policies and endpoints into a Plan in one go. It is the
// reference the incremental Compiler is tested against: both give the same
// Plan for the same state. The identity references Compile takes on the
// allocator are kept, so the Plan's identities stay allocated.
func Compile(in Input) (*Plan, error) {
	alloc := in.Allocator
	if alloc == nil {
		alloc = NewMemoryAllocator()
	}
	c := NewCompilerWithLocals(in.Options, alloc, in.LocalAllocator)
	c.SetNode(in.Node)
	c.SetRemoteNodes(in.RemoteNodes)
	c.SetAPIServers(in.APIServers)
	seenNS := map[string]bool{}
	for _, ns := range in.Namespaces {
		if seenNS[ns.Name] {
			return nil, fmt.Errorf("compile: namespace %q listed twice", ns.Name)
		}
		seenNS[ns.Name] = true
		if err := c.UpsertNamespace(ns); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}
	seenPol := map[policyKey]bool{}
	for i := range in.Policies {
		k := keyOfPolicy(&in.Policies[i])
		if seenPol[k] {
			return nil, fmt.Errorf("compile: policy %s listed twice", in.Policies[i].Ref())
		}
		seenPol[k] = true
		c.UpsertPolicy(in.Policies[i])
	}
	seenEP := map[endpointKey]bool{}
	for _, ep := range in.Endpoints {
		k := endpointKey{ep.Namespace, ep.Name}
		if seenEP[k] {
			return nil, fmt.Errorf("compile: endpoint %s/%s listed twice", ep.Namespace, ep.Name)
		}
		seenEP[k] = true
		if err := c.UpsertEndpoint(ep); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}
	seenRemote := map[endpointKey]bool{}
	for _, ep := range in.RemoteEndpoints {
		k := endpointKey{ep.Namespace, ep.Name}
		if seenRemote[k] {
			return nil, fmt.Errorf("compile: remote endpoint %s/%s listed twice", ep.Namespace, ep.Name)
		}
		seenRemote[k] = true
		if err := c.UpsertRemoteEndpoint(ep); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}
	return c.Plan(), nil
}

// policyKey identifies a policy: kind, namespace and name.
type policyKey struct {
	Kind      Kind
	Namespace string
	Name      string
}

func keyOfPolicy(p *Policy) policyKey { return policyKey{p.Kind, p.Namespace, p.Name} }

func (a policyKey) less(b policyKey) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// endpointKey identifies an endpoint: namespace and name.
type endpointKey struct {
	Namespace string
	Name      string
}

func (a endpointKey) less(b endpointKey) bool {
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}
