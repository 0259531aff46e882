// Package crdtest tests the CustomResourceDefinitions of charts/moat/crds
// and charts/moat/extra-crds/cilium against a real kube-apiserver (started
// by internal/k8stest): what the schemas and CEL rules reject at `kubectl
// apply`, what they leave to moat's own validation (the operator's Valid
// status condition), and that they never reject a policy moat accepts. It
// holds tests only.
package crdtest
