package v1alpha1

import "encoding/json"

// The decode-only mirrors in this file and in kubernetes.go embed the
// TypeMeta and ObjectMeta aliases rather than the metav1 types: controller-gen
// makes a moat.io CRD of every type that embeds metav1.TypeMeta and
// metav1.ObjectMeta, and these are not moat.io resources. They get no
// DeepCopy functions either (+kubebuilder:object:generate=false); the
// cilium.io/v2 resource types with deepcopy are in package api/ciliumv2.

// CiliumNetworkPolicy mirrors cilium.io/v2 CiliumNetworkPolicy for decoding.
// Status is kept opaque so that `kubectl get -o yaml` output decodes. The
// CRD types of cilium.io/v2 are in package api/ciliumv2.
//
// +kubebuilder:object:generate=false
type CiliumNetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`

	Spec   *Rule           `json:"spec,omitempty"`
	Specs  []Rule          `json:"specs,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
}

// CiliumClusterwideNetworkPolicy mirrors cilium.io/v2
// CiliumClusterwideNetworkPolicy for decoding.
//
// +kubebuilder:object:generate=false
type CiliumClusterwideNetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`

	Spec   *Rule           `json:"spec,omitempty"`
	Specs  []Rule          `json:"specs,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
}
