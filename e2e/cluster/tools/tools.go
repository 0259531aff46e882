//go:build tools

// Package tools pins the Kubernetes control-plane binaries that the cluster
// harness builds from the Go module proxy: etcd, kube-apiserver and kubectl.
// It is its own module so that the agent's go.mod never carries
// k8s.io/kubernetes; scripts/k8s-bins.sh builds these and caches them keyed
// by this module's go.sum.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
