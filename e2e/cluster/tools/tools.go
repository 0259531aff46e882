//go:build tools

// Package tools pins the Kubernetes binaries that the cluster harness and
// the control-plane tests build from the Go module proxy: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet,
// kube-proxy and agnhost (the upstream e2e test image's binary). It is its
// own module so that the agent's go.mod never carries k8s.io/kubernetes;
// scripts/k8s-bins.sh builds these and caches them keyed by this module's
// go.mod and go.sum (and the Go version).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
