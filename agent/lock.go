package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockDir holds the node locks, one file per pin root. It is on a tmpfs
// (/run), so a lock file never outlives a reboot, and flock(2) locks die
// with their process: a crashed agent never leaves a stale lock.
const LockDir = "/run/moat/lock"

// NodeLock is the exclusive claim of one process (an agent, or `moat-agent
// cleanup`) on the state under one BPF pin root: the pinned maps and links,
// and what the agent installs beside them. An agent takes it before it
// touches any pin, so a second agent on the same root fails before it can
// change the first one's maps.
type NodeLock struct {
	f    *os.File
	path string
}

// ErrLocked is wrapped by LockNode's error when another process holds the
// lock.
var ErrLocked = errors.New("held by another process")

// LockPath returns the lock file of a pin root in dir: the same root
// (after cleaning) always maps to the same file.
func LockPath(dir, pinRoot string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(pinRoot)))
	return filepath.Join(dir, "bpf-"+hex.EncodeToString(sum[:8])+".lock")
}

// LockNode takes the lock of pinRoot (a file in dir, normally LockDir)
// without waiting. When another process holds it, the error names the pin
// root, the lock file and the holder's pid.
func LockNode(dir, pinRoot string) (*NodeLock, error) {
	path := LockPath(dir, pinRoot)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: create %s: %w", pinRoot, dir, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: open %s: %w", pinRoot, path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w: %s (lock file %s)", pinRoot, ErrLocked, holder(path), path)
		}
		return nil, fmt.Errorf("lock %s: flock %s: %w", pinRoot, path, err)
	}
	// The holder's pid, for the error of whoever comes next.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+" "+filepath.Clean(pinRoot)+"\n"), 0)
	}
	return &NodeLock{f: f, path: path}, nil
}

// holder describes the process recorded in a lock file.
func holder(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "holder unknown"
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "holder unknown (it is starting)"
	}
	pid := fields[0]
	desc := "pid " + pid
	if comm, err := os.ReadFile("/proc/" + pid + "/comm"); err == nil {
		desc += " (" + strings.TrimSpace(string(comm)) + ")"
	}
	return desc
}

// Path returns the lock file's path.
func (l *NodeLock) Path() string { return l.path }

// Release gives the lock up. The file stays (removing it would let two
// processes lock two different files of the same name).
func (l *NodeLock) Release() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = l.f.Close() // closing the last descriptor drops the flock
	l.f = nil
}

// OtherAgents returns the pin roots of the agents that hold a node lock in
// dir, except the one of pinRoot.
func OtherAgents(dir, pinRoot string) ([]string, error) {
	mine := LockPath(dir, pinRoot)
	paths, err := filepath.Glob(filepath.Join(dir, "bpf-*.lock"))
	if err != nil {
		return nil, fmt.Errorf("list node locks: %w", err)
	}
	var out []string
	for _, p := range paths {
		if p == mine {
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			continue // gone meanwhile
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			root := "unknown pin root"
			if b, rerr := os.ReadFile(p); rerr == nil {
				if fields := strings.Fields(string(b)); len(fields) > 1 {
					root = fields[1]
				}
			}
			out = append(out, root)
		}
	}
	return out, nil
}
