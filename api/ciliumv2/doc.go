// Package ciliumv2 holds the cilium.io/v2 CiliumNetworkPolicy and
// CiliumClusterwideNetworkPolicy resource types as moat reads them: the
// spec is moat's rule type (api/v1alpha1.Rule, field for field Cilium's
// api.Rule for the subset moat enforces), so the generated CRDs carry
// exactly the schema and CEL rules of moat's own NetworkPolicy.
//
// controller-gen generates these CRDs into charts/moat/extra-crds/cilium/,
// not into the chart's crds/ directory: Helm installs everything in crds/
// unconditionally, and these names belong to Cilium. Tests and users
// migrating from Cilium without Cilium installed apply them on purpose.
//
// The status is kept opaque (Cilium's own status has per-node fields) and
// preserved as written.
//
// +kubebuilder:object:generate=true
// +groupName=cilium.io
// +versionName=v2
package ciliumv2
