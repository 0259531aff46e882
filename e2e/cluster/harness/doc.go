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

// Extending it (flags of moat-cluster up in brackets):
//
//   - Another image, e.g. the moat agent's: build it with
//     Image{Ref, Files: Binaries("/usr/bin", "bin/moat-agent"), Entrypoint}.Build(tar)
//     and pass the tarball in Config.ExtraImages [-image TAR]; every node
//     imports it. Use imagePullPolicy Never or IfNotPresent.
//   - Another CNI, e.g. moat-cni: Config.CNIConfList is a text/template of
//     the conflist rendered per node with NodeData (Name, Index, NodeIP,
//     PodCIDR, IPAMDir, StateDir) [-cni-conflist FILE]; its plugins are
//     looked up in Config.CNIBinDirs, linked into CNIBinDir(), one path for
//     all nodes [-cni-bin-dir DIR]. Every Node has spec.podCIDR set before
//     its kubelet starts (node N: 10.244.(N-1).0/24).
//   - Services by something else than kube-proxy: Config.NoKubeProxy
//     [-no-kube-proxy].
