package harness

// guards.go prepares the host and records what it was before: the global
// sysctls kubelet rewrites at start, ip_forward (nodes route pod traffic
// through the host), bpffs propagation (a Bidirectional bpffs mount needs a
// shared mount), which of the directories kubelet and containerd write
// outside their configured ones existed, and the nft tables and iptables
// chains present. It adds the guards that keep the cluster's traffic on
// the host: an nft table that drops forwarding between the node bridge and
// any other interface and input to the node subnet from anywhere but the
// bridge, and an unreachable route for the Service range.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// globalSysctls are the host-wide settings a kubelet changes
// (protectKernelDefaults=false) plus ip_forward, which the harness sets.
var globalSysctls = []string{
	"vm.overcommit_memory", "vm.panic_on_oom", "kernel.panic", "kernel.panic_on_oops",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward",
}

// outsideDirs are written by kubelet or containerd whatever their
// configuration says (shared/CLUSTER.md trap 5).
var outsideDirs = []string{
	"/var/lib/cni", "/var/lib/cni/results", "/var/log/containers",
	"/var/lib/kubelet", "/var/lib/kubelet/device-plugins",
	"/run/containerd", "/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc",
}

// hostState is what the host looked like before Up, kept in the state dir
// for Down.
type hostState struct {
	Sysctls         map[string]string `json:"sysctls"`
	BpffsMadeShared bool              `json:"bpffsMadeShared"`
	Existed         map[string]bool   `json:"existed"`
	NftTables       []string          `json:"nftTables"`
	IptablesChains  []string          `json:"iptablesChains"`
}

func (c Config) hostStateFile() string { return c.path("host-state.json") }

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(sysctlPath(name))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(name, v string) error {
	if err := os.WriteFile(sysctlPath(name), []byte(v), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s=%s: %w", name, v, err)
	}
	return nil
}

func nftTables(ctx context.Context) ([]string, error) {
	out, err := run(ctx, "nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	var t []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" {
			t = append(t, f[1]+" "+f[2])
		}
	}
	sort.Strings(t)
	return t, nil
}

var kubeChain = regexp.MustCompile(`^:(KUBE-[A-Z0-9-]+) `)

// iptablesChains lists the KUBE-* chains (family/table/chain) in the host
// netns, through both iptables-nft and iptables-legacy when present.
func iptablesChains(ctx context.Context) []string {
	var chains []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := run(ctx, save)
		if err != nil {
			continue
		}
		table := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "*") {
				table = l[1:]
			}
			if m := kubeChain.FindStringSubmatch(l); m != nil {
				chains = append(chains, save+"/"+table+"/"+m[1])
			}
		}
	}
	sort.Strings(chains)
	return chains
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// recordHost captures the host before anything changes it.
func (c Config) recordHost(ctx context.Context) (*hostState, error) {
	h := &hostState{Sysctls: map[string]string{}, Existed: map[string]bool{}}
	for _, s := range globalSysctls {
		v, err := readSysctl(s)
		if err != nil {
			return nil, err
		}
		h.Sysctls[s] = v
	}
	for _, d := range outsideDirs {
		h.Existed[d] = exists(d)
	}
	var err error
	if h.NftTables, err = nftTables(ctx); err != nil {
		return nil, err
	}
	h.IptablesChains = iptablesChains(ctx)
	return h, nil
}

func (c Config) saveHost(h *hostState) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(c.hostStateFile(), b, 0o600); err != nil {
		return fmt.Errorf("write host state: %w", err)
	}
	return nil
}

func (c Config) loadHost() (*hostState, error) {
	b, err := os.ReadFile(c.hostStateFile())
	if err != nil {
		return nil, err
	}
	var h hostState
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("parse %s: %w", c.hostStateFile(), err)
	}
	return &h, nil
}

// ErrRefused is returned by Up when a cluster is already on the host.
var ErrRefused = errors.New("refuse to start")

// refuseIfPresent fails when a cluster (or its leftovers) is on the host:
// starting over it would mix two clusters' state and lose what the first
// recorded about the host.
func (c Config) refuseIfPresent(ctx context.Context) error {
	var why []string
	if exists(c.hostStateFile()) {
		why = append(why, "state "+c.hostStateFile()+" exists")
	}
	if ents, err := os.ReadDir(c.pidDir()); err == nil {
		for _, e := range ents {
			name := strings.TrimSuffix(e.Name(), ".pid")
			if pid, ok := c.running(name); ok {
				why = append(why, fmt.Sprintf("%s runs (pid %d)", name, pid))
			}
		}
	}
	why = append(why, c.leftovers(ctx)...)
	if len(why) > 0 {
		return fmt.Errorf("%w: a cluster is running or left state behind (%s); run `moat-cluster down` first",
			ErrRefused, strings.Join(why, "; "))
	}
	return nil
}

// guardRuleset is the nft table that keeps cluster traffic on the host.
func guardRuleset() string {
	return fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority -10; policy accept;
		iifname "%[2]s" oifname != "%[2]s" drop
		oifname "%[2]s" iifname != "%[2]s" drop
	}
	chain input {
		type filter hook input priority -10; policy accept;
		ip daddr %[3]s iifname != { "lo", "%[2]s" } drop
	}
}
`, GuardTable, BridgeName, NodeSubnet)
}

// prepareHost records the host, then adds the bridge, the guards and the
// routes, and sets ip_forward and bpffs propagation.
func (c Config) prepareHost(ctx context.Context) error {
	h, err := c.recordHost(ctx)
	if err != nil {
		return err
	}
	prop, err := mountPropagation("/sys/fs/bpf")
	if err != nil {
		return err
	}
	h.BpffsMadeShared = prop == "private"
	// Record before changing anything, so Down can undo a half-done Up.
	if err := c.saveHost(h); err != nil {
		return err
	}
	f := filepath.Join(c.etcDir(), "guard.nft")
	if err := os.WriteFile(f, []byte(guardRuleset()), 0o644); err != nil {
		return err
	}
	steps := [][]string{
		{"nft", "-f", f},
		{"ip", "link", "add", BridgeName, "type", "bridge"},
		{"ip", "addr", "add", BridgeIP + "/24", "dev", BridgeName},
		{"ip", "link", "set", BridgeName, "up"},
		{"ip", "route", "add", "unreachable", ServiceCIDR},
	}
	for _, s := range steps {
		if _, err := run(ctx, s...); err != nil {
			return fmt.Errorf("prepare host: %w", err)
		}
	}
	if h.Sysctls["net.ipv4.ip_forward"] != "1" {
		if err := writeSysctl("net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	if h.BpffsMadeShared {
		if _, err := run(ctx, "mount", "--make-shared", "/sys/fs/bpf"); err != nil {
			return fmt.Errorf("prepare host: %w", err)
		}
	}
	return nil
}

// mountPropagation is "shared" or "private" (or another findmnt value).
func mountPropagation(target string) (string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	found := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || f[4] != target {
			continue
		}
		found = "private"
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				found = "shared"
			}
		}
	}
	if found == "" {
		return "", fmt.Errorf("%s is not mounted (mount -t bpf bpf %s)", target, target)
	}
	return found, nil
}
