package v1alpha1

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// KubernetesNetworkPolicy mirrors networking.k8s.io/v1 NetworkPolicy for
// decoding, so that moat need not depend on k8s.io/api. It embeds the
// meta aliases for the reason given in cilium.go.
//
// +kubebuilder:object:generate=false
type KubernetesNetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata,omitempty"`

	Spec   KubernetesNetworkPolicySpec `json:"spec,omitempty"`
	Status json.RawMessage             `json:"status,omitempty"`
}

// KubernetesNetworkPolicySpec mirrors NetworkPolicySpec.
type KubernetesNetworkPolicySpec struct {
	PodSelector metav1.LabelSelector             `json:"podSelector"`
	Ingress     []KubernetesNetworkPolicyIngress `json:"ingress,omitempty"`
	Egress      []KubernetesNetworkPolicyEgress  `json:"egress,omitempty"`
	PolicyTypes []string                         `json:"policyTypes,omitempty"`
}

// KubernetesNetworkPolicyIngress mirrors NetworkPolicyIngressRule.
type KubernetesNetworkPolicyIngress struct {
	Ports []KubernetesNetworkPolicyPort `json:"ports,omitempty"`
	From  []KubernetesNetworkPolicyPeer `json:"from,omitempty"`
}

// KubernetesNetworkPolicyEgress mirrors NetworkPolicyEgressRule.
type KubernetesNetworkPolicyEgress struct {
	Ports []KubernetesNetworkPolicyPort `json:"ports,omitempty"`
	To    []KubernetesNetworkPolicyPeer `json:"to,omitempty"`
}

// KubernetesNetworkPolicyPort mirrors NetworkPolicyPort.
type KubernetesNetworkPolicyPort struct {
	Protocol *string             `json:"protocol,omitempty"`
	Port     *intstr.IntOrString `json:"port,omitempty"`
	EndPort  *int32              `json:"endPort,omitempty"`
}

// KubernetesNetworkPolicyPeer mirrors NetworkPolicyPeer.
type KubernetesNetworkPolicyPeer struct {
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	IPBlock           *IPBlock              `json:"ipBlock,omitempty"`
}

// IPBlock mirrors networking.k8s.io/v1 IPBlock.
type IPBlock struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}
