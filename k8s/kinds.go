package k8s

import (
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moatnet/moat/policy"
)

// policyKind is one of the policy kinds the Source watches.
type policyKind struct {
	gvr  schema.GroupVersionResource
	kind policy.Kind
	// crd names the CustomResourceDefinition the kind needs ("" for a
	// built-in kind): its informer starts when the CRD is established and
	// stops when it goes.
	crd string
}

// policyKinds are the kinds watched, in the order their changes are applied.
var policyKinds = []policyKind{
	{schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}, policy.KindKubernetesNetworkPolicy, ""},
	{schema.GroupVersionResource{Group: "moat.io", Version: "v1alpha1", Resource: "networkpolicies"}, policy.KindMoatNetworkPolicy, "networkpolicies.moat.io"},
	{schema.GroupVersionResource{Group: "moat.io", Version: "v1alpha1", Resource: "clusterwidenetworkpolicies"}, policy.KindMoatClusterwideNetworkPolicy, "clusterwidenetworkpolicies.moat.io"},
	{schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumnetworkpolicies"}, policy.KindCiliumNetworkPolicy, "ciliumnetworkpolicies.cilium.io"},
	{schema.GroupVersionResource{Group: "cilium.io", Version: "v2", Resource: "ciliumclusterwidenetworkpolicies"}, policy.KindCiliumClusterwideNetworkPolicy, "ciliumclusterwidenetworkpolicies.cilium.io"},
}

// CRDs returns the CustomResourceDefinition names whose policy kinds the
// Source watches when they exist.
func CRDs() []string {
	var out []string
	for _, k := range policyKinds {
		if k.crd != "" {
			out = append(out, k.crd)
		}
	}
	return out
}
