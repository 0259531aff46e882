// Package v1alpha1 holds the Go types of moat's own policy resources
// (moat.io/v1alpha1 NetworkPolicy and ClusterwideNetworkPolicy) and the
// decode-only mirrors of the foreign documents moat accepts verbatim:
// cilium.io/v2 CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy and
// networking.k8s.io/v1 NetworkPolicy.
//
// The rule type (Rule) is CiliumNetworkPolicy-compatible: its JSON field
// names are those of Cilium's api.Rule, so a Cilium policy decodes into it
// unchanged. The types only describe documents; they never validate or
// interpret them (package policy does that), and they import nothing but
// the standard library and k8s.io/apimachinery.
//
// DeepCopy functions are not generated yet: they arrive with the Kubernetes
// informers, which need them.
package v1alpha1
