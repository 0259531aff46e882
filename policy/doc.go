// Package policy owns moat's policy model: parsing policy documents
// (moat.io/v1alpha1, cilium.io/v2, networking.k8s.io/v1), validating them with
// errors that name file, document and field path, label selectors,
// identities, and the compiler that turns policies and endpoints into a Plan.
//
// Everything here is pure Go: no sockets, no kernel, no Kubernetes client.
// The datapath, the Envoy translator and the DNS proxy consume the Plan; they
// never look at policy documents themselves. Given the same inputs, every
// function in this package returns the same output, byte for byte once
// serialised.
//
// Identities: label sets get theirs from an Allocator (the same number on
// every node); CIDR prefixes and FQDN selectors get node-local ones (bit
// 24) from a LocalAllocator, which keeps a number while it is used and
// reuses a released one only after Compiler.ConfirmApplied says the Plan
// that dropped it is in every map and proxy (alloc_local.go).
package policy
