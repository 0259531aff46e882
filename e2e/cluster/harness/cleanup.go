package harness

// cleanup.go takes the cluster down and puts the host back: daemons by
// their PID records, pod processes by their cgroups, containerd shims by
// their socket address, mounts under the state dir, the nodes' netns, the
// bridge, routes and guard table, cgroups, then what kubelet and
// containerd changed outside their directories, against the record
// prepareHost made. leftovers lists whatever of the cluster is still
// there; Down fails when that list is not empty.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Down stops the cluster and restores the host. It works on a half-made
// cluster too, and running it twice is harmless.
func (c Config) Down(ctx context.Context) error {
	h, err := c.loadHost()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for n := 1; n <= maxNodes; n++ {
		name := NodeName(n)
		add(c.stop(ctx, name+"-kube-proxy", 10*time.Second))
		add(c.stop(ctx, name+"-kubelet", 10*time.Second))
	}
	for n := 1; n <= maxNodes; n++ {
		add(killCgroupProcs(ctx, cgroupName(n)))
	}
	add(c.killShims(ctx))
	for n := 1; n <= maxNodes; n++ {
		add(c.stop(ctx, NodeName(n)+"-containerd", 10*time.Second))
	}
	add(c.killShims(ctx)) // any a dying containerd started
	add(unmountUnder(c.StateDir))
	for n := 1; n <= maxNodes; n++ {
		// The veth first: once the netns is deleted its peer goes away
		// asynchronously and a del would race with the kernel.
		if linkExists(hostVeth(n)) {
			if out, err := run(ctx, "ip", "link", "del", hostVeth(n)); err != nil && !strings.Contains(out, "Cannot find device") {
				add(err)
			}
		}
		if exists("/run/netns/" + NodeNetns(n)) {
			_, err := run(ctx, "ip", "netns", "del", NodeNetns(n))
			add(err)
		}
		_, _ = run(ctx, "ip", "route", "del", PodCIDR(n)) // gone with the bridge if not here
	}
	if linkExists(BridgeName) {
		_, err := run(ctx, "ip", "link", "del", BridgeName)
		add(err)
	}
	if out, _ := run(ctx, "ip", "route", "show", ServiceCIDR); strings.Contains(out, "unreachable") {
		_, err := run(ctx, "ip", "route", "del", "unreachable", ServiceCIDR)
		add(err)
	}
	if _, err := run(ctx, "nft", "list", "table", "inet", GuardTable); err == nil {
		_, err := run(ctx, "nft", "delete", "table", "inet", GuardTable)
		add(err)
	}
	for _, d := range []string{"kube-scheduler", "kube-controller-manager"} {
		add(c.stop(ctx, d, 10*time.Second))
	}
	// The apiserver may not finish SIGTERM within 30 s (trap 13), even with
	// every client gone; its state is thrown away, so do not wait long.
	add(c.stop(ctx, "kube-apiserver", 5*time.Second))
	add(c.stop(ctx, "etcd", 10*time.Second))
	for n := 1; n <= maxNodes; n++ {
		add(removeCgroups(cgroupName(n)))
	}
	if h != nil {
		add(c.restoreHost(ctx, h))
	}
	if left := unmountUnder(c.StateDir); left != nil {
		add(left)
	} else {
		add(os.RemoveAll(c.StateDir))
	}
	if left := c.leftovers(ctx); len(left) > 0 {
		add(fmt.Errorf("left on the host: %s", strings.Join(left, "; ")))
	}
	if h != nil {
		if diff := c.hostDiff(ctx, h); len(diff) > 0 {
			add(fmt.Errorf("host differs from before the cluster: %s", strings.Join(diff, "; ")))
		}
	}
	return errors.Join(errs...)
}

func linkExists(name string) bool { return exists("/sys/class/net/" + name) }

// cgroupRoots lists the mount points of every cgroup hierarchy, v1 and v2.
func cgroupRoots() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var roots []string
	for _, l := range strings.Split(string(b), "\n") {
		i := strings.Index(l, " - ")
		if i < 0 {
			continue
		}
		f, post := strings.Fields(l[:i]), strings.Fields(l[i+3:])
		if len(f) >= 5 && len(post) >= 1 && (post[0] == "cgroup" || post[0] == "cgroup2") {
			roots = append(roots, f[4])
		}
	}
	return roots
}

// cgroupPIDs lists the processes in every cgroup under name, in every
// hierarchy.
func cgroupPIDs(name string) []int {
	seen := map[int]bool{}
	for _, r := range cgroupRoots() {
		_ = filepath.WalkDir(filepath.Join(r, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	pids := make([]int, 0, len(seen))
	for p := range seen {
		pids = append(pids, p)
	}
	sort.Ints(pids)
	return pids
}

// killCgroupProcs kills every pod process of a node.
func killCgroupProcs(ctx context.Context, name string) error {
	err := poll(ctx, 20*time.Second, 100*time.Millisecond, func() (bool, error) {
		pids := cgroupPIDs(name)
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return len(pids) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("kill processes of cgroup %s: %w (left: %v)", name, err, cgroupPIDs(name))
	}
	return nil
}

// removeCgroups removes the cgroup trees named name, deepest first.
func removeCgroups(name string) error {
	var errs []error
	for _, r := range cgroupRoots() {
		top := filepath.Join(r, name)
		if !exists(top) {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs)
		for _, d := range dirs {
			// A just-killed process may still be leaving its cgroup.
			err := poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() (bool, error) {
				err := syscall.Rmdir(d)
				return err == nil || errors.Is(err, syscall.ENOENT), err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// killShims kills the containerd shims that serve one of this cluster's
// containerds (they run outside the node cgroups).
func (c Config) killShims(ctx context.Context) error {
	return poll(ctx, 10*time.Second, 100*time.Millisecond, func() (bool, error) {
		pids := procsMatching(func(cmd string) bool {
			return strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, c.StateDir+"/")
		})
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return len(pids) == 0, nil
	})
}

// procsMatching lists live processes whose NUL-joined command line
// (spaces between arguments) f accepts.
func procsMatching(f func(cmdline string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if st, _ := procState(pid); st == "Z" {
			continue
		}
		if f(strings.ReplaceAll(string(b), "\x00", " ")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var mnts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		p := unescapeMount(f[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			mnts = append(mnts, p)
		}
	}
	sort.Slice(mnts, func(i, j int) bool { return len(mnts[i]) > len(mnts[j]) })
	return slices.Compact(mnts)
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// unmountUnder unmounts everything below dir (lazily when busy).
func unmountUnder(dir string) error {
	for range 3 {
		mnts := mountsUnder(dir)
		if len(mnts) == 0 {
			return nil
		}
		for _, m := range mnts {
			if err := syscall.Unmount(m, 0); err != nil {
				_ = syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
	if left := mountsUnder(dir); len(left) > 0 {
		return fmt.Errorf("unmount under %s: still mounted: %s", dir, strings.Join(left, ", "))
	}
	return nil
}

// restoreHost puts back what kubelet, containerd and the harness changed
// outside the state dir.
func (c Config) restoreHost(ctx context.Context, h *hostState) error {
	var errs []error
	for _, s := range globalSysctls {
		want, ok := h.Sysctls[s]
		if !ok {
			continue
		}
		if now, err := readSysctl(s); err == nil && now != want {
			if err := writeSysctl(s, want); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if h.BpffsMadeShared {
		if p, _ := mountPropagation("/sys/fs/bpf"); p == "shared" {
			if _, err := run(ctx, "mount", "--make-private", "/sys/fs/bpf"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// nft tables and iptables chains kube-proxy or kubelet made in the
	// host netns (they belong in the nodes' netns; this is the net).
	if now, err := nftTables(ctx); err == nil {
		for _, t := range now {
			if !slices.Contains(h.NftTables, t) && strings.Contains(t, "kube") {
				f := strings.Fields(t)
				if _, err := run(ctx, "nft", "delete", "table", f[0], f[1]); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	errs = append(errs, removeNewKubeChains(ctx, h.IptablesChains))

	// libcni's cache, kubelet's container log links and device-plugin
	// socket, containerd 1.6's shim sockets and fifos.
	if !h.Existed["/var/lib/cni"] {
		errs = append(errs, os.RemoveAll("/var/lib/cni"))
	} else if !h.Existed["/var/lib/cni/results"] {
		errs = append(errs, os.RemoveAll("/var/lib/cni/results"))
	}
	if ents, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range ents {
			p := filepath.Join("/var/log/containers", e.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, c.StateDir+"/") {
				errs = append(errs, os.Remove(p))
			}
		}
		if !h.Existed["/var/log/containers"] {
			_ = syscall.Rmdir("/var/log/containers")
		}
	}
	if !h.Existed["/var/lib/kubelet"] {
		if len(mountsUnder("/var/lib/kubelet")) == 0 {
			errs = append(errs, os.RemoveAll("/var/lib/kubelet"))
		}
	} else {
		_ = os.Remove("/var/lib/kubelet/device-plugins/kubelet.sock")
		if !h.Existed["/var/lib/kubelet/device-plugins"] {
			errs = append(errs, os.RemoveAll("/var/lib/kubelet/device-plugins"))
		}
	}
	if !h.Existed["/run/containerd"] {
		if len(mountsUnder("/run/containerd")) == 0 {
			errs = append(errs, os.RemoveAll("/run/containerd"))
		}
	} else {
		for _, d := range []string{"/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc"} {
			if !h.Existed[d] {
				errs = append(errs, os.RemoveAll(d))
			}
		}
	}
	return errors.Join(errs...)
}

// removeNewKubeChains deletes KUBE-* iptables chains not in before, after
// removing the rules that jump to them.
func removeNewKubeChains(ctx context.Context, before []string) error {
	var errs []error
	for _, ch := range iptablesChains(ctx) {
		if slices.Contains(before, ch) {
			continue
		}
		parts := strings.SplitN(ch, "/", 3) // save/table/chain
		tool := strings.TrimSuffix(parts[0], "-save")
		table, chain := parts[1], parts[2]
		out, _ := run(ctx, tool, "-t", table, "-S")
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") && strings.Contains(l, "-j "+chain) {
				args := append([]string{tool, "-t", table, "-D"}, strings.Fields(l)[1:]...)
				if _, err := run(ctx, args...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if _, err := run(ctx, tool, "-t", table, "-F", chain); err != nil {
			errs = append(errs, err)
		}
		if _, err := run(ctx, tool, "-t", table, "-X", chain); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// leftovers lists the cluster's own objects still on the host.
func (c Config) leftovers(ctx context.Context) []string {
	var left []string
	for n := 1; n <= maxNodes; n++ {
		if exists("/run/netns/" + NodeNetns(n)) {
			left = append(left, "netns "+NodeNetns(n))
		}
		if linkExists(hostVeth(n)) {
			left = append(left, "link "+hostVeth(n))
		}
		for _, r := range cgroupRoots() {
			if exists(filepath.Join(r, cgroupName(n))) {
				left = append(left, "cgroup "+filepath.Join(r, cgroupName(n)))
			}
		}
	}
	if linkExists(BridgeName) {
		left = append(left, "link "+BridgeName)
	}
	if _, err := run(ctx, "nft", "list", "table", "inet", GuardTable); err == nil {
		left = append(left, "nft table inet "+GuardTable)
	}
	if out, _ := run(ctx, "ip", "route", "show"); out != "" {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "10.244.") || strings.Contains(l, ServiceCIDR) || strings.Contains(l, "172.30.0.") {
				left = append(left, "route "+strings.TrimSpace(l))
			}
		}
	}
	for _, m := range mountsUnder(c.StateDir) {
		left = append(left, "mount "+m)
	}
	for _, p := range procsMatching(func(cmd string) bool { return strings.Contains(cmd, c.StateDir+"/") }) {
		left = append(left, fmt.Sprintf("process %d", p))
	}
	return left
}

// hostDiff compares the host with the record made before the cluster.
func (c Config) hostDiff(ctx context.Context, h *hostState) []string {
	var diff []string
	for _, s := range globalSysctls {
		if now, err := readSysctl(s); err == nil && now != h.Sysctls[s] {
			diff = append(diff, fmt.Sprintf("sysctl %s=%s (was %s)", s, now, h.Sysctls[s]))
		}
	}
	if p, _ := mountPropagation("/sys/fs/bpf"); h.BpffsMadeShared && p != "private" {
		diff = append(diff, "/sys/fs/bpf is "+p+" (was private)")
	}
	if now, err := nftTables(ctx); err == nil {
		for _, t := range now {
			if !slices.Contains(h.NftTables, t) && strings.Contains(t, "kube") {
				diff = append(diff, "nft table "+t)
			}
		}
	}
	for _, ch := range iptablesChains(ctx) {
		if !slices.Contains(h.IptablesChains, ch) {
			diff = append(diff, "iptables chain "+ch)
		}
	}
	for _, d := range outsideDirs {
		if !h.Existed[d] && exists(d) {
			diff = append(diff, "directory "+d)
		}
	}
	if ents, err := os.ReadDir("/var/log/containers"); err == nil {
		for _, e := range ents {
			if t, err := os.Readlink(filepath.Join("/var/log/containers", e.Name())); err == nil && strings.HasPrefix(t, c.StateDir+"/") {
				diff = append(diff, "link /var/log/containers/"+e.Name())
			}
		}
	}
	return diff
}
