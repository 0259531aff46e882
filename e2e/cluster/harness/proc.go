package harness

// proc.go starts the cluster's daemons detached from the harness (their own
// session, output to logs/NAME.log), records each one's PID and start time
// in pids/NAME.pid, and stops them by that record only: a PID that now
// belongs to another process (different start time) is never signalled.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// daemon is one long-running process of the cluster.
type daemon struct {
	name  string   // file name of its pid and log
	netns string   // "" host netns, else a /run/netns name entered with nsenter
	argv  []string // binary and arguments
	env   []string // extra environment
}

// start launches d in its own session and records it.
func (c Config) start(d daemon) error {
	argv := d.argv
	if d.netns != "" {
		// nsenter --net keeps the host's mount namespace (ip netns exec
		// would remount /sys and hide the cgroup v1 hierarchies).
		argv = append([]string{"nsenter", "--net=/run/netns/" + d.netns, "--"}, argv...)
	}
	logf, err := os.OpenFile(filepath.Join(c.logDir(), d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log of %s: %w", d.name, err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), d.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = c.StateDir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	pid := cmd.Process.Pid
	st, err := procStart(pid)
	if err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("start %s: read its start time: %w", d.name, err)
	}
	rec := fmt.Sprintf("%d %d\n%s\n", pid, st, strings.Join(argv, " "))
	if err := os.WriteFile(filepath.Join(c.pidDir(), d.name+".pid"), []byte(rec), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("record pid of %s: %w", d.name, err)
	}
	// Reap it if it dies while we still run, so it is no zombie.
	go func() { _ = cmd.Wait() }()
	c.Log.Info("started", "daemon", d.name, "pid", pid)
	return nil
}

// procStart is field 22 of /proc/PID/stat: the start time in clock ticks.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// running reports the PID of the recorded daemon name when that very
// process is still alive.
func (c Config) running(name string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(c.pidDir(), name+".pid"))
	if err != nil {
		return 0, false
	}
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &st); err != nil {
		return 0, false
	}
	now, err := procStart(pid)
	if err != nil || now != st {
		return 0, false
	}
	if state, _ := procState(pid); state == "Z" {
		return 0, false
	}
	return pid, true
}

func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) == 0 {
		return "", errors.New("short stat")
	}
	return f[0], nil
}

// stop sends SIGTERM to the recorded daemon, SIGKILL after grace, and waits
// until it is gone. A daemon not running is no error.
func (c Config) stop(ctx context.Context, name string, grace time.Duration) error {
	pid, ok := c.running(name)
	if !ok {
		_ = os.Remove(filepath.Join(c.pidDir(), name+".pid"))
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if !waitGone(ctx, c, name, grace) {
		c.Log.Info("no exit after SIGTERM; killing", "daemon", name, "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(ctx, c, name, 10*time.Second) {
			return fmt.Errorf("stop %s (pid %d): still running after SIGKILL", name, pid)
		}
	}
	_ = os.Remove(filepath.Join(c.pidDir(), name+".pid"))
	c.Log.Info("stopped", "daemon", name)
	return nil
}

func waitGone(ctx context.Context, c Config, name string, d time.Duration) bool {
	err := poll(ctx, d, 100*time.Millisecond, func() (bool, error) {
		_, ok := c.running(name)
		return !ok, nil
	})
	return err == nil
}

// poll calls f every interval until it reports done, f fails, ctx ends or
// timeout passes.
func poll(ctx context.Context, timeout, interval time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		done, err := f()
		if done {
			return err
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// run runs a short command and returns its combined output; the error
// names the command and carries its output.
func run(ctx context.Context, argv ...string) (string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
