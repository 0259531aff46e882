// Package cluster is the end-to-end suite that runs against a real
// multi-node Kubernetes cluster through KUBECONFIG: the local one that
// `make cluster-up` starts (package harness, command moat-cluster), or kind
// where Docker exists. Its tests are named TestCluster*; without KUBECONFIG
// they skip, unless MOAT_CLUSTER_TESTS=1, which makes a missing KUBECONFIG
// a failure (make e2e-cluster sets it).
//
// Each test works in namespaces of its own (moat-e2e-*) and deletes them,
// also when it fails; every wait has a deadline. It must never change
// cluster-wide objects it did not create, nor the host it runs on.
package cluster
