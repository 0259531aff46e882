package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// GroupVersion is moat's API group and version.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

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
