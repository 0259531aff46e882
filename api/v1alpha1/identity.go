package v1alpha1

// This file owns the cluster-scoped Identity resource: one security label
// set and the number every node uses for it.

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Bounds of a cluster-wide identity number. Numbers below MinIdentity are
// reserved (host, world, ...); MaxIdentity is below the node-local bit
// (1<<24), which marks identities a node allocates for itself (CIDRs).
const (
	MinIdentity int64 = 256
	MaxIdentity int64 = 1<<24 - 1
)

// Identity binds one security label set to one cluster-wide number
// (moat.io/v1alpha1, cluster-scoped). The agents' allocator creates it,
// named "ls-" + a hex hash of the label set; both fields are immutable, so
// a number never changes meaning while the object exists. moat-operator
// deletes identities no pod has used for a grace period.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName={mid,moatid},categories={moat}
// +kubebuilder:printcolumn:name="ID",type=integer,JSONPath=`.spec.id`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Identity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// Spec is the number and the label set; immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: an identity's id and labels never change"
	Spec IdentitySpec `json:"spec"`
}

// IdentitySpec is an identity's number and security label set.
type IdentitySpec struct {
	// ID is the identity number, 256..16777215.
	// +required
	// +kubebuilder:validation:Minimum=256
	// +kubebuilder:validation:Maximum=16777215
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="id is immutable"
	ID int64 `json:"id"`

	// Labels is the security label set, keys with their source prefix as
	// moat prints them ("k8s:app": "web",
	// "k8s:io.kubernetes.pod.namespace": "prod").
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="labels are immutable"
	Labels map[string]string `json:"labels"`
}

// IdentityList is a list of Identity.
//
// +kubebuilder:object:root=true
type IdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	Items []Identity `json:"items"`
}
