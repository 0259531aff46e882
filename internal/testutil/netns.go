package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/moatnet/moat/internal/netns"
)

// Pod is a network namespace wired like a moat endpoint: a veth pair whose
// pod side (eth0) has a /32 (or /128) address and a default route via a
// gateway address that sits on the host side, a host route for the pod
// address to the host veth, and forwarding on the host veth.
type Pod struct {
	Name        string     // netns name (visible to `ip netns`)
	NsPath      string     // /var/run/netns/<Name>
	HostIf      string     // host-side veth name
	HostIfIndex int        // host-side veth ifindex
	Addr        netip.Addr // the pod's address
	Gateway     netip.Addr // the gateway address on the host veth
}

// PodOptions configures NewPod.
type PodOptions struct {
	Addr    netip.Addr // required
	Gateway netip.Addr // default 10.200.255.254 (IPv4) / fe80::1 (IPv6)
}

func randomSuffix(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("read random: %v", err)
	}
	return hex.EncodeToString(b[:])
}

// RunCmd runs a command and fails the test with its output when it fails.
func RunCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// NewPod creates a netns with a veth pair to the current (host) netns and
// removes both with t.Cleanup, even when the test fails. It needs root and
// iproute2.
func NewPod(t testing.TB, opts PodOptions) *Pod {
	t.Helper()
	if !opts.Addr.IsValid() {
		t.Fatal("NewPod: Addr is required")
	}
	if !opts.Gateway.IsValid() {
		opts.Gateway = netip.MustParseAddr("10.200.255.254")
		if opts.Addr.Is6() {
			opts.Gateway = netip.MustParseAddr("fe80::1")
		}
	}
	_, err := exec.LookPath("ip")
	Require(t, "iproute2 (ip)", err)
	sfx := randomSuffix(t)
	p := &Pod{
		Name:    "moat-t-" + sfx,
		HostIf:  "mt" + sfx,
		Addr:    opts.Addr,
		Gateway: opts.Gateway,
	}
	p.NsPath = "/var/run/netns/" + p.Name
	RunCmd(t, "ip", "netns", "add", p.Name)
	t.Cleanup(func() {
		// Deleting the host veth removes its peer; the netns goes last.
		_ = exec.Command("ip", "link", "del", p.HostIf).Run()
		_ = exec.Command("ip", "netns", "del", p.Name).Run()
	})
	RunCmd(t, "ip", "link", "add", p.HostIf, "type", "veth", "peer", "name", "eth0", "netns", p.Name)
	bits, fam := "32", "-4"
	if p.Addr.Is6() {
		bits, fam = "128", "-6"
	}
	// Pod side.
	RunCmd(t, "ip", "-n", p.Name, "link", "set", "lo", "up")
	if p.Addr.Is6() {
		RunCmd(t, "ip", "netns", "exec", p.Name, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")
		RunCmd(t, "ip", "-n", p.Name, "addr", "add", p.Addr.String()+"/"+bits, "dev", "eth0", "nodad")
	} else {
		RunCmd(t, "ip", "-n", p.Name, "addr", "add", p.Addr.String()+"/"+bits, "dev", "eth0")
	}
	RunCmd(t, "ip", "-n", p.Name, "link", "set", "eth0", "up")
	// Host side.
	if p.Gateway.Is6() {
		RunCmd(t, "ip", "addr", "add", p.Gateway.String()+"/128", "dev", p.HostIf, "nodad")
	} else {
		RunCmd(t, "ip", "addr", "add", p.Gateway.String()+"/32", "dev", p.HostIf, "scope", "link")
	}
	RunCmd(t, "ip", "link", "set", p.HostIf, "up")
	RunCmd(t, "ip", fam, "route", "add", p.Addr.String()+"/"+bits, "dev", p.HostIf)
	if p.Addr.Is6() {
		writeSysctl(t, "/proc/sys/net/ipv6/conf/"+p.HostIf+"/forwarding", "1")
	} else {
		writeSysctl(t, "/proc/sys/net/ipv4/conf/"+p.HostIf+"/forwarding", "1")
		writeSysctl(t, "/proc/sys/net/ipv4/conf/"+p.HostIf+"/rp_filter", "0")
	}
	RunCmd(t, "ip", "-n", p.Name, fam, "route", "add", "default", "via", p.Gateway.String(), "dev", "eth0", "onlink")
	idx, err := ifindex(p.HostIf)
	if err != nil {
		t.Fatalf("NewPod: %v", err)
	}
	p.HostIfIndex = idx
	return p
}

func writeSysctl(t testing.TB, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func ifindex(name string) (int, error) {
	b, err := os.ReadFile("/sys/class/net/" + name + "/ifindex")
	if err != nil {
		return 0, fmt.Errorf("read ifindex of %s: %w", name, err)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n); err != nil {
		return 0, fmt.Errorf("parse ifindex of %s: %w", name, err)
	}
	return n, nil
}

// Do runs fn with the calling goroutine's OS thread switched into the pod's
// netns. Sockets fn creates belong to the pod netns and may be used from any
// goroutine afterwards; goroutines fn starts do not run in the pod netns.
func (p *Pod) Do(fn func() error) error {
	return InNetns(p.NsPath, fn)
}

// InNetns runs fn inside the netns at path, on its own locked OS thread
// (internal/netns.Do, the implementation production code uses too). fn may
// call t.Fatal: the calling goroutine then ends as well.
func InNetns(path string, fn func() error) error {
	return netns.Do(path, fn)
}
