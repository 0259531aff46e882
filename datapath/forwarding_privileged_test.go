package datapath

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// snapshotForwarding restores, when the test ends, the IPv4 forwarding
// flags that a host-wide toggle resets.
func snapshotForwarding(t *testing.T) {
	t.Helper()
	paths, _ := filepath.Glob("/proc/sys/net/ipv4/conf/*/forwarding")
	paths = append(paths, "/proc/sys/net/ipv4/ip_forward")
	saved := map[string]string{}
	for _, p := range paths {
		if v, err := os.ReadFile(p); err == nil {
			saved[p] = strings.TrimSpace(string(v))
		}
	}
	t.Cleanup(func() {
		// ip_forward first: writing it resets every interface's flag.
		if v, ok := saved["/proc/sys/net/ipv4/ip_forward"]; ok {
			_ = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644)
		}
		for p, v := range saved {
			if cur, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(cur)) != v {
				_ = os.WriteFile(p, []byte(v), 0o644)
			}
		}
	})
}

func forwardingOf(ifname string) string {
	v, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + ifname + "/forwarding")
	return strings.TrimSpace(string(v))
}

// toggleIPForward does what a program that sets net.ipv4.ip_forward and
// reverts it does: the kernel sets every interface's flag to the last value.
func toggleIPForward(t *testing.T) {
	t.Helper()
	for _, v := range []string{"1", "0"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644); err != nil {
			t.Fatalf("write ip_forward: %v", err)
		}
	}
}

// TestPrivilegedForwardingToggle: a host-wide ip_forward change switches
// forwarding off on the endpoints' host veths. Tracked flows go on (local
// delivery), but a new flow gets no reply: the failure of the restart test
// under a busy shared host. KeepForwarding switches the flags back on when
// the kernel announces the change, and new flows pass again.
func TestPrivilegedForwardingToggle(t *testing.T) {
	testutil.Privileged(t)
	snapshotForwarding(t)
	tp := newTwoPods(t)
	root := testPinRoot(t)
	d := openTestDatapath(t, root)
	t.Cleanup(func() { _ = d.Cleanup() })
	plan := tp.plan(policy.DirectionPlan{}, policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
		{L4Key: policy.L4Key{Identity: tp.idA, Proto: policy.ProtoAny}, Verdict: policy.VerdictAllow},
	}})
	if err := d.Sync(plan, tp.ifaces(), nil); err != nil {
		t.Fatal(err)
	}
	tp.attach(t, d)
	tracked, err := tp.a.NewPinger()
	if err != nil {
		t.Fatal(err)
	}
	defer tracked.Close()
	for range 3 {
		if err := tracked.Ping(tp.b.Addr, 2*time.Second); err != nil {
			t.Fatalf("ping before the toggle: %v", err)
		}
	}

	// Without KeepForwarding: the tracked flow answers, a new one does not.
	toggleIPForward(t)
	if got := forwardingOf(tp.a.HostIf); got != "0" {
		t.Fatalf("forwarding on %s after the toggle: %q, want 0 (the toggle did nothing)", tp.a.HostIf, got)
	}
	if err := tracked.Ping(tp.b.Addr, 2*time.Second); err != nil {
		t.Errorf("tracked flow after the toggle: %v", err)
	}
	if err := probeICMP(tp.a, tp.b.Addr); !errors.Is(err, testutil.ErrNoReply) {
		t.Fatalf("new flow after the toggle without KeepForwarding: %v, want no reply", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- KeepForwarding(ctx, func() []string { return []string{tp.a.HostIf, tp.b.HostIf} }, nil)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("KeepForwarding: %v", err)
		}
	}()
	on := func() bool { return forwardingOf(tp.a.HostIf) == "1" && forwardingOf(tp.b.HostIf) == "1" }
	waitCond(t, "forwarding back on at start", 5*time.Second, on)
	if err := probeICMP(tp.a, tp.b.Addr); err != nil {
		t.Errorf("new flow with forwarding back on: %v", err)
	}
	// And on the next toggle, at once.
	toggleIPForward(t)
	waitCond(t, "forwarding back on after a toggle", 5*time.Second, on)
	if err := probeICMP(tp.a, tp.b.Addr); err != nil {
		t.Errorf("new flow after a toggle with KeepForwarding: %v", err)
	}
}
