package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// NetworkPolicy is moat's namespaced policy (moat.io/v1alpha1). Exactly one
// of Spec and Specs must be set. Endpoint selectors and peer endpoint
// selectors are scoped to the policy's namespace unless they name
// io.kubernetes.pod.namespace themselves.
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is a single rule.
	Spec *Rule `json:"spec,omitempty"`
	// Specs is a list of rules.
	Specs []Rule `json:"specs,omitempty"`
}

// NetworkPolicyList is a list of NetworkPolicy.
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []NetworkPolicy `json:"items"`
}

// ClusterwideNetworkPolicy is moat's cluster-scoped policy
// (moat.io/v1alpha1): its selectors are not scoped to a namespace.
type ClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec  *Rule  `json:"spec,omitempty"`
	Specs []Rule `json:"specs,omitempty"`
}

// ClusterwideNetworkPolicyList is a list of ClusterwideNetworkPolicy.
type ClusterwideNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []ClusterwideNetworkPolicy `json:"items"`
}
