package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
)

// TestPrivilegedPrepareAndRestoreHost runs the host half of Up (record,
// bridge, guard table, routes, ip_forward, bpffs propagation), changes
// what a kubelet would change, and checks that Down puts all of it back.
func TestPrivilegedPrepareAndRestoreHost(t *testing.T) {
	testutil.Privileged(t)
	ctx := t.Context()
	c := Config{StateDir: filepath.Join(t.TempDir(), "mc")}.WithDefaults()
	if err := c.refuseIfPresent(ctx); err != nil {
		t.Fatalf("a local cluster runs on this host; take it down first: %v", err)
	}
	for _, d := range []string{c.StateDir, c.etcDir(), c.logDir(), c.pidDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before, err := c.recordHost(ctx)
	if err != nil {
		t.Fatal(err)
	}
	propBefore, err := mountPropagation("/sys/fs/bpf")
	testutil.Require(t, "bpffs at /sys/fs/bpf", err)
	t.Cleanup(func() {
		// Whatever happened above, leave nothing behind.
		_ = c.Down(ctx)
		for _, s := range globalSysctls {
			_ = writeSysctl(s, before.Sysctls[s])
		}
	})
	if err := c.prepareHost(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.refuseIfPresent(ctx); err == nil || !strings.Contains(err.Error(), "refuse to start") {
		t.Fatalf("refuseIfPresent over a prepared host = %v, want a refusal", err)
	}
	if !linkExists(BridgeName) {
		t.Error("no bridge after prepareHost")
	}
	if v, _ := readSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("ip_forward %s after prepareHost", v)
	}
	if p, _ := mountPropagation("/sys/fs/bpf"); p != "shared" {
		t.Errorf("bpffs %s after prepareHost", p)
	}
	// What a kubelet does at start (shared/CLUSTER.md trap 4 and 5).
	for s, v := range map[string]string{"vm.overcommit_memory": "1", "kernel.panic": "10", "kernel.panic_on_oops": "1"} {
		if err := writeSysctl(s, v); err != nil {
			t.Fatal(err)
		}
	}
	if !before.Existed["/var/lib/kubelet"] {
		if err := os.MkdirAll("/var/lib/kubelet/device-plugins", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/var/lib/kubelet/device-plugins/kubelet.sock", nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	if left := c.leftovers(ctx); len(left) > 0 {
		t.Errorf("left after Down: %v", left)
	}
	if diff := c.hostDiff(ctx, before); len(diff) > 0 {
		t.Errorf("host differs after Down: %v", diff)
	}
	if p, _ := mountPropagation("/sys/fs/bpf"); p != propBefore {
		t.Errorf("bpffs propagation %s after Down, was %s", p, propBefore)
	}
	if exists(c.StateDir) {
		t.Errorf("state dir %s still there", c.StateDir)
	}
}
