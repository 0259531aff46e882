package harness

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Fixed addressing. The node bridge and pod ranges are private ranges the
// host does not use otherwise; Validate checks that they are free.
const (
	BridgeName     = "mc-nodes"      // host bridge the nodes' eth0 hang on
	BridgeIP       = "172.30.0.1"    // host side; the apiserver binds here
	NodeSubnet     = "172.30.0.0/24" // node IPs are 172.30.0.N+1
	ServiceCIDR    = "10.96.0.0/16"
	ClusterCIDR    = "10.244.0.0/16" // node N gets 10.244.(N-1).0/24
	KubernetesSvc  = "10.96.0.1"
	ClusterDNS     = "10.96.0.10"
	ClusterDomain  = "cluster.local"
	GuardTable     = "moat-cluster-guard" // nft table (inet) in the host netns
	PauseImage     = "registry.k8s.io/pause:3.10.2"
	APIServerPort  = 6443
	etcdClientPort = 2379
	maxNodes       = 4
)

// Config says what cluster to run and where its files live.
type Config struct {
	// StateDir holds PKI, configs, logs, PIDs and every node's runtime
	// directories. Default /var/run/moat-cluster.
	StateDir string
	// BinDir holds the binaries scripts/k8s-bins.sh builds.
	BinDir string
	// Nodes is the number of worker nodes, 1 to 4. Default 2.
	Nodes int
	// CNIConfList is a text/template of a CNI conflist, rendered per node
	// with NodeData; empty means Debian's bridge + host-local + portmap.
	// A different CNI (moat-cni) is swapped in here.
	CNIConfList string
	// CNIBinDirs are searched for CNI plugins, in order. Default
	// /usr/lib/cni (Debian's containernetworking-plugins).
	CNIBinDirs []string
	// ExtraImages are image tarballs (docker-archive or OCI) imported into
	// every node next to the built-in ones.
	ExtraImages []string
	// NoKubeProxy runs no kube-proxy: ClusterIPs then work only through
	// whatever else translates them (moat's socket-level translation), and
	// Up does not wait for kube-dns (pods reach it by ClusterIP).
	NoKubeProxy bool
	// ImageCache keeps the built-in images, keyed by their inputs.
	// Default /var/cache/moat/cluster-images.
	ImageCache string
	// CoreDNSReplicas of the kube-dns Deployment. Default 2.
	CoreDNSReplicas int
	// Log receives progress; default discards.
	Log *slog.Logger
	// Out receives the lines a user reads (status). Default os.Stdout.
	Out io.Writer
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.StateDir == "" {
		c.StateDir = "/var/run/moat-cluster"
	}
	// Mounts and command lines show the resolved path (/var/run is a link
	// to /run on Debian); every comparison uses this one.
	c.StateDir = resolvePath(c.StateDir)
	if c.Nodes == 0 {
		c.Nodes = 2
	}
	if len(c.CNIBinDirs) == 0 {
		c.CNIBinDirs = []string{"/usr/lib/cni"}
	}
	if c.ImageCache == "" {
		c.ImageCache = "/var/cache/moat/cluster-images"
	}
	if c.CoreDNSReplicas == 0 {
		c.CoreDNSReplicas = 2
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	return c
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state dir %q: must be an absolute path", c.StateDir)
	}
	if c.StateDir == "/" || strings.Count(filepath.Clean(c.StateDir), "/") < 2 {
		return fmt.Errorf("state dir %q: too close to / to be removed safely", c.StateDir)
	}
	if c.Nodes < 1 || c.Nodes > maxNodes {
		return fmt.Errorf("nodes %d: must be 1 to %d", c.Nodes, maxNodes)
	}
	if c.BinDir == "" {
		return errors.New("bin dir: empty (run scripts/k8s-bins.sh and pass the directory it prints)")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
		"kubectl", "kubelet", "kube-proxy", "agnhost", "coredns", "pause"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("bin dir %s: %s missing (rebuild with scripts/k8s-bins.sh): %w", c.BinDir, b, err)
		}
	}
	if c.CNIConfList != "" {
		if _, err := os.Stat(c.CNIConfList); err != nil {
			return fmt.Errorf("cni conflist template: %w", err)
		}
	}
	for _, img := range c.ExtraImages {
		if _, err := os.Stat(img); err != nil {
			return fmt.Errorf("extra image: %w", err)
		}
	}
	if !filepath.IsAbs(c.ImageCache) {
		return fmt.Errorf("image cache %q: must be an absolute path", c.ImageCache)
	}
	if c.CoreDNSReplicas < 1 {
		return fmt.Errorf("coredns replicas %d: must be at least 1", c.CoreDNSReplicas)
	}
	return nil
}

// Node names and addresses of node n (1-based).
func NodeName(n int) string  { return fmt.Sprintf("mc-node%d", n) }
func NodeNetns(n int) string { return fmt.Sprintf("mc-node%d", n) }
func NodeIP(n int) string    { return fmt.Sprintf("172.30.0.%d", n+1) }
func PodCIDR(n int) string   { return fmt.Sprintf("10.244.%d.0/24", n-1) }
func hostVeth(n int) string  { return fmt.Sprintf("mc-node%d-h", n) }
func cgroupName(n int) string {
	return fmt.Sprintf("mc-node%d", n)
}

// paths under the state dir.
func (c Config) path(p ...string) string { return filepath.Join(append([]string{c.StateDir}, p...)...) }
func (c Config) pkiDir() string          { return c.path("pki") }
func (c Config) etcDir() string          { return c.path("etc") }
func (c Config) logDir() string          { return c.path("logs") }
func (c Config) pidDir() string          { return c.path("pids") }
func (c Config) nodeDir(n int) string    { return c.path(NodeName(n)) }
func (c Config) bin(name string) string  { return filepath.Join(c.BinDir, name) }

// Kubeconfig is the admin kubeconfig of the running cluster.
func (c Config) Kubeconfig() string { return c.path("etc", "admin.kubeconfig") }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// resolvePath resolves the symlinks of the longest existing prefix of p.
func resolvePath(p string) string {
	if !filepath.IsAbs(p) {
		return p
	}
	p = filepath.Clean(p)
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == "/" {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}
