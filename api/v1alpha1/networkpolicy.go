package v1alpha1

// This file owns the moat.io/v1alpha1 policy resources: NetworkPolicy,
// ClusterwideNetworkPolicy, their lists and their status.

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Condition types and reasons of a policy's status.
const (
	// ConditionValid is True when every rule of the policy passed moat's
	// validation, False (with ReasonInvalid and the first errors in the
	// message) when moat cannot enforce it.
	ConditionValid = "Valid"
	// ReasonValid is the reason of a True Valid condition.
	ReasonValid = "Valid"
	// ReasonInvalid is the reason of a False Valid condition.
	ReasonInvalid = "Invalid"
)

// NetworkPolicy is moat's namespaced policy (moat.io/v1alpha1). Exactly one
// of Spec and Specs must be set. Endpoint selectors and peer endpoint
// selectors are scoped to the policy's namespace unless they name
// io.kubernetes.pod.namespace themselves.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName={mnp,moatnp},categories={moat}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.specs) || size(self.specs) == 0",message="spec and specs are mutually exclusive",fieldPath=".specs",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="has(self.spec) || (has(self.specs) && size(self.specs) > 0)",message="one of spec or specs is required",fieldPath=".spec",reason=FieldValueRequired
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is a single rule.
	// +optional
	Spec *Rule `json:"spec,omitempty"`
	// Specs is a list of rules.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Specs []Rule `json:"specs,omitempty"`

	// Status is written by moat-operator: whether moat can enforce the
	// policy.
	// +optional
	Status PolicyStatus `json:"status,omitempty,omitzero"`
}

// NetworkPolicyList is a list of NetworkPolicy.
//
// +kubebuilder:object:root=true
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []NetworkPolicy `json:"items"`
}

// ClusterwideNetworkPolicy is moat's cluster-scoped policy
// (moat.io/v1alpha1): its selectors are not scoped to a namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName={mcnp,moatcnp},categories={moat}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="!has(self.spec) || !has(self.specs) || size(self.specs) == 0",message="spec and specs are mutually exclusive",fieldPath=".specs",reason=FieldValueForbidden
// +kubebuilder:validation:XValidation:rule="has(self.spec) || (has(self.specs) && size(self.specs) > 0)",message="one of spec or specs is required",fieldPath=".spec",reason=FieldValueRequired
type ClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is a single rule.
	// +optional
	Spec *Rule `json:"spec,omitempty"`
	// Specs is a list of rules.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Specs []Rule `json:"specs,omitempty"`

	// Status is written by moat-operator: whether moat can enforce the
	// policy.
	// +optional
	Status PolicyStatus `json:"status,omitempty,omitzero"`
}

// ClusterwideNetworkPolicyList is a list of ClusterwideNetworkPolicy.
//
// +kubebuilder:object:root=true
type ClusterwideNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []ClusterwideNetworkPolicy `json:"items"`
}

// PolicyStatus is the status of a policy object, written by moat-operator.
type PolicyStatus struct {
	// ObservedGeneration is the metadata.generation the conditions
	// describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions holds the Valid condition: True, or False with reason
	// Invalid and a message that carries the field path and text of
	// `moat policy validate`.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
