package v1alpha1

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CiliumNetworkPolicy mirrors cilium.io/v2 CiliumNetworkPolicy for decoding.
// Status is kept opaque so that `kubectl get -o yaml` output decodes.
type CiliumNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   *Rule           `json:"spec,omitempty"`
	Specs  []Rule          `json:"specs,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
}

// CiliumClusterwideNetworkPolicy mirrors cilium.io/v2
// CiliumClusterwideNetworkPolicy for decoding.
type CiliumClusterwideNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   *Rule           `json:"spec,omitempty"`
	Specs  []Rule          `json:"specs,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
}
