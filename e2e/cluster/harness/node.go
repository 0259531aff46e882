package harness

// node.go makes one node: a network namespace with eth0 on the host bridge
// (its own node IP, default route via the host), the node's cgroup in
// every v1 hierarchy, and in the netns containerd (images imported), the
// CNI config, kubelet and, once the node exists, kube-proxy in nftables
// mode. Every daemon runs under `nsenter --net`, never `ip netns exec`
// (which remounts /sys and hides the cgroup mounts from containerd).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// NodeData is what a CNI conflist template sees for one node.
type NodeData struct {
	Name     string // node name, mc-nodeN
	Index    int    // N, 1-based
	NodeIP   string // eth0 address in the node netns
	PodCIDR  string // the node's spec.podCIDR
	IPAMDir  string // a per-node directory for host-local IPAM state
	StateDir string // the node's directory under the cluster state dir
}

// DefaultCNIConfList is Debian's bridge plugin with host-local IPAM: one
// bridge per node netns, routed (no masquerade) between nodes by the host.
const DefaultCNIConfList = `{
  "cniVersion": "1.0.0",
  "name": "mc-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "mc-cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "{{.IPAMDir}}"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`

func (c Config) nodeData(n int) NodeData {
	return NodeData{Name: NodeName(n), Index: n, NodeIP: NodeIP(n), PodCIDR: PodCIDR(n),
		IPAMDir: filepath.Join(c.nodeDir(n), "ipam"), StateDir: c.nodeDir(n)}
}

// CNIBinDir is the directory every node's containerd searches for CNI
// plugins: links to the plugins of Config.CNIBinDirs (first wins). It is
// one path for all nodes, so a DaemonSet can mount it as a hostPath.
func (c Config) CNIBinDir() string { return c.path("cni", "bin") }

// CNIConfDir is node n's CNI configuration directory.
func (c Config) CNIConfDir(n int) string { return filepath.Join(c.nodeDir(n), "cni", "net.d") }

func (c Config) containerdSock(n int) string {
	return filepath.Join(c.nodeDir(n), "containerd", "containerd.sock")
}

// linkCNIPlugins fills CNIBinDir from CNIBinDirs.
func (c Config) linkCNIPlugins() error {
	dst := c.CNIBinDir()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, dir := range c.CNIBinDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("read cni bin dir: %w", err)
		}
		for _, e := range ents {
			l := filepath.Join(dst, e.Name())
			if exists(l) {
				continue
			}
			if err := os.Symlink(filepath.Join(dir, e.Name()), l); err != nil {
				return fmt.Errorf("link cni plugin: %w", err)
			}
		}
	}
	for _, need := range []string{"loopback"} {
		if !exists(filepath.Join(dst, need)) {
			return fmt.Errorf("cni plugin %s not in %v (apt-get install containernetworking-plugins)", need, c.CNIBinDirs)
		}
	}
	return nil
}

// cgroupMounts lists the mount points of the cgroup v1 hierarchies.
func cgroupMounts() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var mnts []string
	for _, l := range strings.Split(string(b), "\n") {
		i := strings.Index(l, " - ")
		if i < 0 {
			continue
		}
		f, post := strings.Fields(l[:i]), strings.Fields(l[i+3:])
		if len(f) >= 5 && len(post) >= 1 && post[0] == "cgroup" {
			mnts = append(mnts, f[4])
		}
	}
	return mnts, nil
}

// makeNetwork creates node n's netns, veth pair and routes.
func (c Config) makeNetwork(ctx context.Context, n int) error {
	ns := NodeNetns(n)
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "link", "add", hostVeth(n), "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", hostVeth(n), "master", BridgeName, "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "add", NodeIP(n) + "/24", "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", BridgeIP},
		{"ip", "route", "add", PodCIDR(n), "via", NodeIP(n)},
	}
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return fmt.Errorf("make network of %s: %w", NodeName(n), err)
		}
	}
	return nil
}

func (c Config) makeCgroups(n int) error {
	mnts, err := cgroupMounts()
	if err != nil {
		return err
	}
	if len(mnts) == 0 {
		return nil // cgroup v2 only: kubelet creates its root itself
	}
	for _, m := range mnts {
		if err := os.MkdirAll(filepath.Join(m, cgroupName(n)), 0o755); err != nil {
			return fmt.Errorf("create cgroup of %s: %w", NodeName(n), err)
		}
	}
	return nil
}

func (c Config) containerdConfig(n int) string {
	d := filepath.Join(c.nodeDir(n), "containerd")
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[5]q
    # This VM withholds CAP_SYS_RESOURCE; a negative oom_score_adj for
    # the sandbox would fail every pod (shared/CLUSTER.md trap 2).
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          Root = %[6]q
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[7]q
      conf_dir = %[8]q
      max_conf_num = 1
`, filepath.Join(d, "root"), filepath.Join(d, "state"), c.containerdSock(n), filepath.Join(d, "opt"),
		PauseImage, filepath.Join(c.nodeDir(n), "runc"), c.CNIBinDir(), c.CNIConfDir(n))
}

func (c Config) kubeletConfig(n int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host without systemd (shared/CLUSTER.md trap 1).
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[2]s
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[3]s
authorization:
  mode: Webhook
clusterDomain: %[4]s
clusterDNS: [%[5]s]
resolvConf: %[6]s
podLogsDir: %[7]s
# Local images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
  nodefs.inodesFree: 1%%
serializeImagePulls: false
maxPods: 110
`, cgroupName(n), c.containerdSock(n), filepath.Join(c.pkiDir(), "ca.crt"), ClusterDomain, ClusterDNS,
		filepath.Join(c.etcDir(), "pod-resolv.conf"), filepath.Join(c.nodeDir(n), "pod-logs"))
}

// startNode brings node n up to a running kubelet (not yet Ready).
func (c Config) startNode(ctx context.Context, n int, images []string) error {
	nd := c.nodeDir(n)
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "runc", "cni/net.d",
		"ipam", "kubelet", "pod-logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(nd, d), 0o755); err != nil {
			return err
		}
	}
	if err := c.makeNetwork(ctx, n); err != nil {
		return err
	}
	if err := c.makeCgroups(n); err != nil {
		return err
	}
	// CNI config before containerd starts, so the node is network-ready
	// from the start.
	tmplText := DefaultCNIConfList
	if c.CNIConfList != "" {
		b, err := os.ReadFile(c.CNIConfList)
		if err != nil {
			return fmt.Errorf("read cni conflist template: %w", err)
		}
		tmplText = string(b)
	}
	tmpl, err := template.New("conflist").Option("missingkey=error").Parse(tmplText)
	if err != nil {
		return fmt.Errorf("parse cni conflist template: %w", err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, c.nodeData(n)); err != nil {
		return fmt.Errorf("render cni conflist for %s: %w", NodeName(n), err)
	}
	if err := os.WriteFile(filepath.Join(c.CNIConfDir(n), "10-mc-pods.conflist"), conf.Bytes(), 0o644); err != nil {
		return err
	}
	cfg := filepath.Join(nd, "containerd.toml")
	if err := os.WriteFile(cfg, []byte(c.containerdConfig(n)), 0o644); err != nil {
		return err
	}
	name := NodeName(n)
	if err := c.start(daemon{name: name + "-containerd", netns: NodeNetns(n),
		argv: []string{"containerd", "--config", cfg},
		env:  []string{"TMPDIR=" + filepath.Join(nd, "tmp")}}); err != nil {
		return err
	}
	sock := c.containerdSock(n)
	if err := poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		if _, ok := c.running(name + "-containerd"); !ok {
			return true, fmt.Errorf("containerd of %s exited; see %s", name, filepath.Join(c.logDir(), name+"-containerd.log"))
		}
		_, err := run(ctx, "ctr", "-a", sock, "version")
		return err == nil, err
	}); err != nil {
		return fmt.Errorf("wait for containerd of %s: %w", name, err)
	}
	t0 := time.Now()
	for _, img := range images {
		if _, err := run(ctx, "ctr", "-a", sock, "-n", "k8s.io", "images", "import", img); err != nil {
			return fmt.Errorf("import image into %s: %w", name, err)
		}
	}
	c.Log.Info("images imported", "node", name, "count", len(images), "took", time.Since(t0).Round(time.Millisecond))
	kcfg := filepath.Join(nd, "kubelet-config.yaml")
	if err := os.WriteFile(kcfg, []byte(c.kubeletConfig(n)), 0o644); err != nil {
		return err
	}
	return c.start(daemon{name: name + "-kubelet", netns: NodeNetns(n), argv: []string{c.bin("kubelet"),
		"--config=" + kcfg, "--kubeconfig=" + filepath.Join(c.etcDir(), name+".kubeconfig"),
		"--root-dir=" + filepath.Join(nd, "kubelet"), "--cert-dir=" + filepath.Join(nd, "kubelet", "pki"),
		"--hostname-override=" + name,
		// Without it kubelet looks its name up in DNS, which the netns
		// lacks, and the node stays NotReady for minutes (trap 11).
		"--node-ip=" + NodeIP(n), "--v=1"}})
}

// startKubeProxy runs kube-proxy (nftables) in node n's netns; it needs
// the Node object, so it starts after the kubelet registered.
func (c Config) startKubeProxy(n int) error {
	name := NodeName(n)
	return c.start(daemon{name: name + "-kube-proxy", netns: NodeNetns(n), argv: []string{c.bin("kube-proxy"),
		"--kubeconfig=" + filepath.Join(c.etcDir(), "kube-proxy.kubeconfig"),
		"--proxy-mode=nftables", "--hostname-override=" + name, "--cluster-cidr=" + ClusterCIDR,
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
		// Leave conntrack sysctls alone: some are global to the host.
		"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0", "--v=1"}})
}
