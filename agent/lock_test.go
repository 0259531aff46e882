package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestLockNode: a second lock on one pin root fails naming the holder's
// pid; another root is independent; a released lock can be taken again.
func TestLockNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lock")
	first, err := LockNode(dir, "/sys/fs/bpf/moat-a")
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	_, err = LockNode(dir, "/sys/fs/bpf/moat-a/") // same root, other spelling
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) ||
		!strings.Contains(err.Error(), "/sys/fs/bpf/moat-a") {
		t.Fatalf("second lock = %v, want ErrLocked naming the root and pid %d", err, os.Getpid())
	}
	other, err := LockNode(dir, "/sys/fs/bpf/moat-b")
	if err != nil {
		t.Fatalf("lock of another root: %v", err)
	}
	if roots, err := OtherAgents(dir, "/sys/fs/bpf/moat-b"); err != nil || len(roots) != 1 || roots[0] != "/sys/fs/bpf/moat-a" {
		t.Errorf("OtherAgents = %v, %v; want [/sys/fs/bpf/moat-a]", roots, err)
	}
	other.Release()
	first.Release()
	again, err := LockNode(dir, "/sys/fs/bpf/moat-a")
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	again.Release()
}
