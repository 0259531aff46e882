package ciliumv2

// This file owns the cilium.io/v2 policy resource types and their scheme
// registration.

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moatnet/moat/api/v1alpha1"
)

// Group and version of Cilium's policy resources.
const (
	Group   = "cilium.io"
	Version = "v2"
)

// GroupVersion is cilium.io/v2.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// SchemeGroupVersion is GroupVersion under the name client-go helpers
// expect.
var SchemeGroupVersion = GroupVersion

var (
	// SchemeBuilder registers CiliumNetworkPolicy and
	// CiliumClusterwideNetworkPolicy (and their lists) with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the cilium.io/v2 policy types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&CiliumNetworkPolicy{}, &CiliumNetworkPolicyList{},
		&CiliumClusterwideNetworkPolicy{}, &CiliumClusterwideNetworkPolicyList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}

// CiliumNetworkPolicy is Cilium's namespaced policy. Exactly one of Spec
// and Specs must be set.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName={cnp,ciliumnp},categories={cilium,ciliumpolicy}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.specs) || size(self.specs) == 0",message="spec and specs are mutually exclusive",fieldPath=".specs",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="has(self.spec) || (has(self.specs) && size(self.specs) > 0)",message="one of spec or specs is required",fieldPath=".spec",reason=FieldValueRequired
type CiliumNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is a single rule.
	// +optional
	Spec *v1alpha1.Rule `json:"spec,omitempty"`
	// Specs is a list of rules.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Specs []v1alpha1.Rule `json:"specs,omitempty"`

	// Status is opaque to moat and preserved as written.
	// +optional
	Status *runtime.RawExtension `json:"status,omitempty"`
}

// CiliumNetworkPolicyList is a list of CiliumNetworkPolicy.
//
// +kubebuilder:object:root=true
type CiliumNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []CiliumNetworkPolicy `json:"items"`
}

// CiliumClusterwideNetworkPolicy is Cilium's cluster-scoped policy.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName={ccnp},categories={cilium,ciliumpolicy}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.specs) || size(self.specs) == 0",message="spec and specs are mutually exclusive",fieldPath=".specs",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="has(self.spec) || (has(self.specs) && size(self.specs) > 0)",message="one of spec or specs is required",fieldPath=".spec",reason=FieldValueRequired
type CiliumClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is a single rule.
	// +optional
	Spec *v1alpha1.Rule `json:"spec,omitempty"`
	// Specs is a list of rules.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Specs []v1alpha1.Rule `json:"specs,omitempty"`

	// Status is opaque to moat and preserved as written.
	// +optional
	Status *runtime.RawExtension `json:"status,omitempty"`
}

// CiliumClusterwideNetworkPolicyList is a list of
// CiliumClusterwideNetworkPolicy.
//
// +kubebuilder:object:root=true
type CiliumClusterwideNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []CiliumClusterwideNetworkPolicy `json:"items"`
}
