package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// API groups and versions of the documents moat reads.
const (
	Group   = "moat.io"
	Version = "v1alpha1"

	// APIVersion is the apiVersion of moat's own resources.
	APIVersion = Group + "/" + Version
	// CiliumAPIVersion is the apiVersion of CiliumNetworkPolicy and
	// CiliumClusterwideNetworkPolicy.
	CiliumAPIVersion = "cilium.io/v2"
	// KubernetesNetworkingAPIVersion is the apiVersion of Kubernetes
	// NetworkPolicy.
	KubernetesNetworkingAPIVersion = "networking.k8s.io/v1"
)

// Kinds of the documents moat reads.
const (
	KindNetworkPolicy                  = "NetworkPolicy"
	KindClusterwideNetworkPolicy       = "ClusterwideNetworkPolicy"
	KindCiliumNetworkPolicy            = "CiliumNetworkPolicy"
	KindCiliumClusterwideNetworkPolicy = "CiliumClusterwideNetworkPolicy"
)

// Kind of the cluster-wide identity resource.
const KindIdentity = "Identity"

// GroupVersion is moat's API group and version.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// SchemeGroupVersion is GroupVersion under the name client-go's generated
// code and helpers expect.
var SchemeGroupVersion = GroupVersion

var (
	// SchemeBuilder registers moat's resource types (NetworkPolicy,
	// ClusterwideNetworkPolicy, Identity and their lists) with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds moat's resource types to a scheme, for typed and
	// dynamic client-go use.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource returns the GroupResource of a resource of this group
// ("networkpolicies" → networkpolicies.moat.io).
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

// addKnownTypes registers the resource types (not the decode-only
// mirrors) and the meta types of the group version.
func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&NetworkPolicy{}, &NetworkPolicyList{},
		&ClusterwideNetworkPolicy{}, &ClusterwideNetworkPolicyList{},
		&Identity{}, &IdentityList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}

// Aliases of the apimachinery types the documents embed, so that consumers
// (package policy) need to import only this package.
type (
	TypeMeta                 = metav1.TypeMeta
	ObjectMeta               = metav1.ObjectMeta
	LabelSelector            = metav1.LabelSelector
	LabelSelectorRequirement = metav1.LabelSelectorRequirement
	IntOrString              = intstr.IntOrString
)

// Kinds of value an IntOrString holds.
const (
	IntOrStringInt    = intstr.Int
	IntOrStringString = intstr.String
)
