package envoy_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
)

// supervisorFakeEnvoy is a stand-in for Envoy: a shell script that records
// each start ("pid args…" in starts) and then follows line n of plan for
// its n-th start (the last line once the plan runs out):
//
//	exit:N  exit with status N at once
//	wait    run until SIGTERM (recorded in terms, then exit 0) or SIGUSR1
//	        (exit 3)
//	ignore  ignore SIGTERM and run until killed
//
// A process is ready for signals once its pid is in ready.
const supervisorFakeEnvoy = `#!/bin/sh
dir=$(dirname "$0")
echo "$$ $*" >> "$dir/starts"
n=$(wc -l < "$dir/starts")
mode=$(sed -n "${n}p" "$dir/plan")
[ -n "$mode" ] || mode=$(tail -n 1 "$dir/plan")
case "$mode" in
exit:*) exit "${mode#exit:}" ;;
wait)
	# Short foreground sleeps: the shell runs a trap once the current one
	# ends, which avoids the race between a signal and "wait" that some
	# shells have.
	trap 'echo $$ >> "$dir/terms"; exit 0' TERM
	trap 'exit 3' USR1
	echo $$ >> "$dir/ready"
	while :; do sleep 0.05; done
	;;
ignore)
	trap '' TERM
	echo $$ >> "$dir/ready"
	exec sleep 3600
	;;
esac
`

type supervisorFake struct {
	dir, binary string
}

func newSupervisorFake(t *testing.T, plan ...string) *supervisorFake {
	t.Helper()
	f := &supervisorFake{dir: t.TempDir()}
	f.binary = filepath.Join(f.dir, "fake-envoy")
	if err := os.WriteFile(f.binary, []byte(supervisorFakeEnvoy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "plan"), []byte(strings.Join(plan, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Leave nothing running, whatever happens: every fake runs in its own
	// process group (the supervisor sets Setpgid).
	t.Cleanup(func() {
		for _, line := range f.lines("starts") {
			pid, _ := strconv.Atoi(strings.Fields(line)[0])
			if pid > 0 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		}
	})
	return f
}

// lines returns the complete lines of file name (none if it is missing).
func (f *supervisorFake) lines(name string) []string {
	b, _ := os.ReadFile(filepath.Join(f.dir, name))
	var out []string
	for l := range strings.Lines(string(b)) {
		if strings.HasSuffix(l, "\n") {
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
	}
	return out
}

// waitLines waits until file name has n lines and returns them.
func (f *supervisorFake) waitLines(t *testing.T, name string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if l := f.lines(name); len(l) >= n {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d lines, have %v", name, n, f.lines(name))
		}
		time.Sleep(5 * time.Millisecond) // polling a file the child writes; no event to wait on
	}
}

// supervisorClock is a manual clock: After registers a timer that fires
// when Advance moves the time past it, and reports its duration on waits.
type supervisorClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []supervisorTimer
	waits  chan time.Duration
}

type supervisorTimer struct {
	at time.Time
	ch chan time.Time
}

func newSupervisorClock() *supervisorClock {
	return &supervisorClock{now: time.Unix(1767225600, 0), waits: make(chan time.Duration, 100)}
}

func (c *supervisorClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *supervisorClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	tm := supervisorTimer{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.timers = append(c.timers, tm)
	c.mu.Unlock()
	c.waits <- d
	return tm.ch
}

func (c *supervisorClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if tm.at.After(c.now) {
			kept = append(kept, tm)
			continue
		}
		tm.ch <- c.now
	}
	c.timers = kept
}

// expectWait waits until the supervisor waits on the clock and checks for
// how long.
func (c *supervisorClock) expectWait(t *testing.T, want time.Duration) {
	t.Helper()
	select {
	case d := <-c.waits:
		if d != want {
			t.Fatalf("supervisor waits %s, want %s", d, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("supervisor does not wait (want a %s wait)", want)
	}
}

type supervisorRun struct {
	sup    *envoy.Supervisor
	reg    *prometheus.Registry
	cancel context.CancelFunc
	errc   chan error
	log    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startSupervisor(t *testing.T, cfg envoy.SupervisorConfig) *supervisorRun {
	t.Helper()
	r := &supervisorRun{reg: prometheus.NewRegistry(), errc: make(chan error, 1), log: &syncBuffer{}}
	cfg.Registerer = r.reg
	cfg.Logger = slog.New(slog.NewTextHandler(r.log, nil))
	cfg.Output = r.log
	sup, err := envoy.NewSupervisor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.sup = sup
	ctx, cancel := context.WithCancel(t.Context())
	r.cancel = cancel
	go func() { r.errc <- sup.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(20 * time.Second):
			t.Errorf("supervisor did not return")
		}
	})
	return r
}

func (r *supervisorRun) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		r.errc <- err // for the cleanup
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("supervisor did not return after cancel; log:\n%s", r.log)
	}
}

func (r *supervisorRun) metric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestSupervisorRestartsWithBackoff(t *testing.T) {
	fake := newSupervisorFake(t, "exit:1", "exit:2", "exit:3", "wait")
	clock := newSupervisorClock()
	bootstrap := filepath.Join(fake.dir, "bootstrap.yaml")
	run := startSupervisor(t, envoy.SupervisorConfig{
		Binary: fake.binary, BootstrapPath: bootstrap, BaseID: 7, Concurrency: 2,
		ExtraArgs: []string{"--log-level", "info"}, DrainTime: 1500 * time.Millisecond,
		BackoffInitial: time.Second, BackoffMax: 3 * time.Second, Clock: clock,
	})
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		clock.expectWait(t, want)
		fake.waitLines(t, "starts", i+1)
		clock.Advance(want)
	}
	fake.waitLines(t, "ready", 1)
	starts := fake.waitLines(t, "starts", 4)
	wantArgs := "-c " + bootstrap + " --drain-time-s 2 --base-id 7 --concurrency 2 --log-level info"
	for _, s := range starts {
		if _, args, _ := strings.Cut(s, " "); args != wantArgs {
			t.Errorf("started with %q, want %q", args, wantArgs)
		}
	}
	if got := run.metric(t, "moat_envoy_restarts_total"); got != 3 {
		t.Errorf("moat_envoy_restarts_total = %v, want 3", got)
	}
	if got := run.metric(t, "moat_envoy_up"); got != 1 {
		t.Errorf("moat_envoy_up = %v, want 1", got)
	}
	run.stop(t)
	if terms := fake.waitLines(t, "terms", 1); terms[0] != strings.Fields(starts[3])[0] {
		t.Errorf("SIGTERM reached %v, want pid of the 4th start %s", terms, starts[3])
	}
	if got := run.metric(t, "moat_envoy_up"); got != 0 {
		t.Errorf("moat_envoy_up = %v after stop, want 0", got)
	}
	for _, w := range []string{"status=\"exit 1\"", "status=\"exit 3\"", "envoy stopped"} {
		if !strings.Contains(run.log.String(), w) {
			t.Errorf("log lacks %s:\n%s", w, run.log)
		}
	}
}

func TestSupervisorResetsBackoffAfterStableRun(t *testing.T) {
	fake := newSupervisorFake(t, "exit:1", "wait", "wait")
	clock := newSupervisorClock()
	run := startSupervisor(t, envoy.SupervisorConfig{
		Binary: fake.binary, BootstrapPath: "b.yaml",
		BackoffInitial: time.Second, BackoffMax: time.Minute, StableAfter: 30 * time.Second, Clock: clock,
	})
	clock.expectWait(t, time.Second)
	clock.Advance(time.Second)
	ready := fake.waitLines(t, "ready", 1)
	clock.Advance(30 * time.Second) // the second Envoy has been up long enough
	pid, _ := strconv.Atoi(ready[0])
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil { // makes it exit 3
		t.Fatal(err)
	}
	clock.expectWait(t, time.Second) // not 2s: the backoff was reset
	clock.Advance(time.Second)
	fake.waitLines(t, "ready", 2)
	run.stop(t)
	if got := run.metric(t, "moat_envoy_restarts_total"); got != 2 {
		t.Errorf("moat_envoy_restarts_total = %v, want 2", got)
	}
}

func TestSupervisorDrainsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		adminDown bool
	}{
		{name: "drain then SIGTERM"},
		{name: "admin unreachable, SIGTERM at once", adminDown: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newSupervisorFake(t, "wait")
			clock := newSupervisorClock()
			admin := admintest.New()
			addr := admin.ServeUnix(t)
			if tc.adminDown {
				addr = filepath.Join(t.TempDir(), "gone.sock")
			}
			run := startSupervisor(t, envoy.SupervisorConfig{
				Binary: fake.binary, BootstrapPath: "b.yaml", AdminAddr: addr,
				DrainTime: 7 * time.Second, StopTimeout: 11 * time.Second, Clock: clock,
			})
			fake.waitLines(t, "ready", 1)
			run.cancel()
			if !tc.adminDown {
				clock.expectWait(t, 7*time.Second) // draining
				if admin.Drains() != 1 {
					t.Fatalf("drains = %d, requests %v", admin.Drains(), admin.Requests())
				}
				if len(fake.lines("terms")) != 0 {
					t.Fatal("SIGTERM before the drain time passed")
				}
				clock.Advance(7 * time.Second)
			}
			clock.expectWait(t, 11*time.Second) // SIGTERM sent, waiting for the exit
			run.stop(t)
			fake.waitLines(t, "terms", 1)
			if tc.adminDown && !strings.Contains(run.log.String(), "envoy drain failed") {
				t.Errorf("log does not say the drain failed:\n%s", run.log)
			}
		})
	}
}

func TestSupervisorKillsAfterStopTimeout(t *testing.T) {
	fake := newSupervisorFake(t, "ignore")
	clock := newSupervisorClock()
	run := startSupervisor(t, envoy.SupervisorConfig{
		Binary: fake.binary, BootstrapPath: "b.yaml", StopTimeout: 4 * time.Second, Clock: clock,
	})
	ready := fake.waitLines(t, "ready", 1)
	run.cancel()
	clock.expectWait(t, 4*time.Second)
	select {
	case <-run.errc:
		t.Fatal("Run returned before the stop timeout passed")
	default:
	}
	clock.Advance(4 * time.Second)
	run.stop(t)
	pid, _ := strconv.Atoi(ready[0])
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d still exists", pid)
	}
	if !strings.Contains(run.log.String(), `status="signal killed"`) {
		t.Errorf("log does not report the kill:\n%s", run.log)
	}
}

func TestSupervisorStopsDuringBackoff(t *testing.T) {
	fake := newSupervisorFake(t, "exit:1")
	clock := newSupervisorClock()
	run := startSupervisor(t, envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b.yaml", Clock: clock})
	clock.expectWait(t, time.Second)
	run.stop(t)
	if n := len(fake.lines("starts")); n != 1 {
		t.Errorf("%d starts, want 1", n)
	}
}

func TestSupervisorStartFailure(t *testing.T) {
	fake := newSupervisorFake(t, "wait")
	sup, err := envoy.NewSupervisor(envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fake.binary); err != nil {
		t.Fatal(err)
	}
	err = sup.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "start envoy "+fake.binary) {
		t.Errorf("Run = %v, want a start error naming the binary", err)
	}
}

func TestNewSupervisorErrors(t *testing.T) {
	fake := newSupervisorFake(t, "wait")
	for _, tc := range []struct {
		name string
		cfg  envoy.SupervisorConfig
		want string
	}{
		{"no bootstrap", envoy.SupervisorConfig{Binary: fake.binary}, "bootstrap path is required"},
		{"no binary", envoy.SupervisorConfig{Binary: filepath.Join(fake.dir, "nope"), BootstrapPath: "b"}, "find envoy binary"},
		{"bad admin", envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b", AdminAddr: "admin"}, "neither a socket path"},
		{"backoff", envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b", BackoffInitial: time.Minute, BackoffMax: time.Second}, "backoff max 1s is below backoff initial 1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.NewSupervisor(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewSupervisor = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestSupervisorMetricsLint(t *testing.T) {
	fake := newSupervisorFake(t, "wait")
	reg := prometheus.NewRegistry()
	if _, err := envoy.NewSupervisor(envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b", Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	problems, err := promtest.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if _, err := envoy.NewSupervisor(envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b", Registerer: reg}); err == nil {
		t.Error("registering twice on one registry succeeded")
	}
}

func TestSupervisorCancelledBeforeRun(t *testing.T) {
	fake := newSupervisorFake(t, "wait")
	sup, err := envoy.NewSupervisor(envoy.SupervisorConfig{Binary: fake.binary, BootstrapPath: "b.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := sup.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := len(fake.lines("starts")); n != 0 {
		t.Errorf("%d starts after cancel, want 0", n)
	}
}
