// Package harness runs a local multi-node Kubernetes cluster on one Linux
// host, for the cluster e2e suite and benchmarks: etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler on the host; per node a
// network namespace with its own node IP on a host bridge, and in it
// containerd, kubelet and kube-proxy (nftables); CoreDNS as kube-dns; images
// packed locally and imported into every node's containerd.
//
// It owns everything it creates under its state directory and the host
// objects named after it (netns mc-nodeN, bridge mc-nodes, veths mc-nodeN-h,
// nft table moat-cluster-guard, cgroups mc-nodeN). Down stops what Up
// started and puts back what kubelet and containerd change outside their
// directories (global sysctls, bpffs propagation, ip_forward, libcni's cache,
// /var/log/containers links, /run/containerd leftovers, the device-plugin
// socket), then checks that nothing of the cluster is left.
//
// It must never touch objects it did not create: it refuses to start over a
// cluster that is running (or whose leftovers are present), and Down removes
// only names it owns. It needs root and the Debian packages containerd,
// runc and containernetworking-plugins; the Kubernetes binaries come from
// scripts/k8s-bins.sh. The recipe and its traps are in shared/CLUSTER.md.
package harness
