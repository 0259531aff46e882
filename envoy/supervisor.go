package envoy

// The supervisor is the thin process layer around Envoy for setups where
// moat starts Envoy itself (standalone mode with Envoy configured): it owns
// the process, never its configuration, which reaches Envoy over xDS.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SupervisorClock is the time source of the Supervisor (backoff, drain and
// stop timeouts, uptime).
type SupervisorClock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// SupervisorConfig configures the Envoy process supervisor.
type SupervisorConfig struct {
	// Binary is the Envoy executable, a path or a name looked up in PATH.
	// Default "envoy".
	Binary string
	// BootstrapPath is the bootstrap file passed with -c. Required.
	BootstrapPath string
	// AdminAddr is Envoy's admin address (socket path or host:port, as for
	// NewAdminClient). When set, stopping drains the listeners through it
	// before SIGTERM; when empty, stopping starts with SIGTERM.
	AdminAddr string
	// BaseID is passed as --base-id; Envoys that share a host need
	// distinct ones (shared-memory and hot-restart socket names).
	BaseID uint32
	// Concurrency is passed as --concurrency when > 0 (worker threads).
	Concurrency int
	// ExtraArgs are appended to Envoy's command line.
	ExtraArgs []string
	// DrainTime is Envoy's --drain-time-s (rounded up to whole seconds)
	// and how long a stop waits after draining before SIGTERM. Default 5s.
	DrainTime time.Duration
	// StopTimeout is how long a stop waits after SIGTERM before SIGKILL.
	// Default 10s.
	StopTimeout time.Duration
	// BackoffInitial is the first wait before restarting an Envoy that
	// exited; each further exit doubles it up to BackoffMax. Defaults 1s
	// and 30s.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// StableAfter resets the backoff: an Envoy that ran this long before
	// exiting is restarted after BackoffInitial. Default 1m.
	StableAfter time.Duration
	// Output receives Envoy's stdout and stderr. Default os.Stderr.
	Output io.Writer
	Clock  SupervisorClock // default: the real clock
	Logger *slog.Logger    // default: discard
	// Registerer receives moat_envoy_restarts_total and moat_envoy_up; nil
	// means the metrics are not registered.
	Registerer prometheus.Registerer
}

// WithDefaults returns c with zero fields set to their defaults.
func (c SupervisorConfig) WithDefaults() SupervisorConfig {
	if c.Binary == "" {
		c.Binary = "envoy"
	}
	if c.DrainTime == 0 {
		c.DrainTime = 5 * time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.BackoffInitial == 0 {
		c.BackoffInitial = time.Second
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 30 * time.Second
	}
	if c.StableAfter == 0 {
		c.StableAfter = time.Minute
	}
	if c.Output == nil {
		c.Output = os.Stderr
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the problems of a defaulted SupervisorConfig.
func (c SupervisorConfig) Validate() error {
	var errs []error
	if c.BootstrapPath == "" {
		errs = append(errs, errors.New("bootstrap path is required"))
	}
	if c.DrainTime < 0 || c.StopTimeout < 0 || c.BackoffInitial < 0 || c.StableAfter < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.BackoffMax < c.BackoffInitial {
		errs = append(errs, fmt.Errorf("backoff max %s is below backoff initial %s", c.BackoffMax, c.BackoffInitial))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("concurrency %d is negative", c.Concurrency))
	}
	if c.AdminAddr != "" {
		if _, err := NewAdminClient(c.AdminAddr); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate envoy supervisor config: %w", err)
	}
	return nil
}

// Supervisor runs one Envoy process: it starts it, restarts it with
// exponential backoff whenever it exits, and drains and stops it when its
// context ends.
type Supervisor struct {
	cfg      SupervisorConfig
	binary   string
	admin    *AdminClient
	log      *slog.Logger
	restarts prometheus.Counter
	up       prometheus.Gauge
}

// NewSupervisor checks cfg, finds the binary and registers the metrics.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("find envoy binary: %w", err)
	}
	s := &Supervisor{
		cfg:    cfg,
		binary: bin,
		log:    cfg.Logger,
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_envoy_restarts_total",
			Help: "Times the supervisor restarted Envoy after it exited.",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_envoy_up",
			Help: "1 while the supervised Envoy process runs, else 0.",
		}),
	}
	if cfg.AdminAddr != "" {
		if s.admin, err = NewAdminClient(cfg.AdminAddr); err != nil {
			return nil, err
		}
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.restarts, s.up} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register envoy supervisor metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Args returns Envoy's command line after the binary.
func (s *Supervisor) Args() []string {
	drain := int64((s.cfg.DrainTime + time.Second - 1) / time.Second)
	args := []string{
		"-c", s.cfg.BootstrapPath,
		"--drain-time-s", strconv.FormatInt(drain, 10),
		"--base-id", strconv.FormatUint(uint64(s.cfg.BaseID), 10),
	}
	if s.cfg.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(s.cfg.Concurrency))
	}
	return append(args, s.cfg.ExtraArgs...)
}

// Run supervises Envoy until ctx ends, then drains and stops it and
// returns nil. It returns an error only when Envoy cannot be started at all.
func (s *Supervisor) Run(ctx context.Context) error {
	backoff := s.cfg.BackoffInitial
	for {
		if ctx.Err() != nil {
			return nil
		}
		cmd := exec.Command(s.binary, s.Args()...)
		cmd.Stdout, cmd.Stderr = s.cfg.Output, s.cfg.Output
		// Own process group: a terminal's ^C reaches the supervisor, which
		// then drains Envoy, instead of killing Envoy directly.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start envoy %s: %w", s.binary, err)
		}
		started := s.cfg.Clock.Now()
		s.up.Set(1)
		s.log.Info("envoy started", "pid", cmd.Process.Pid, "args", cmd.Args[1:])
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		select {
		case <-ctx.Done():
			s.stop(ctx, cmd, exited)
			s.up.Set(0)
			return nil
		case err := <-exited:
			s.up.Set(0)
			ran := s.cfg.Clock.Now().Sub(started)
			if ran >= s.cfg.StableAfter {
				backoff = s.cfg.BackoffInitial
			}
			s.log.Warn("envoy exited; restarting", "pid", cmd.Process.Pid, "status", exitStatus(err), "ran", ran, "restart_in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.cfg.Clock.After(backoff):
		}
		s.restarts.Inc()
		backoff = min(2*backoff, s.cfg.BackoffMax)
	}
}

// stop drains Envoy's listeners through the admin interface (when there is
// one), waits the drain time, then sends SIGTERM and, after StopTimeout,
// SIGKILL. It returns when the process has exited.
func (s *Supervisor) stop(ctx context.Context, cmd *exec.Cmd, exited <-chan error) {
	pid := cmd.Process.Pid
	wait := func(d time.Duration) (error, bool) {
		select {
		case err := <-exited:
			return err, true
		case <-s.cfg.Clock.After(d):
			return nil, false
		}
	}
	if s.admin != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTime)
		err := s.admin.DrainListeners(dctx)
		cancel()
		if err != nil {
			s.log.Warn("envoy drain failed; stopping without it", "pid", pid, "err", err)
		} else {
			s.log.Info("envoy draining", "pid", pid, "drain_time", s.cfg.DrainTime)
			if err, done := wait(s.cfg.DrainTime); done {
				s.log.Info("envoy exited while draining", "pid", pid, "status", exitStatus(err))
				return
			}
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("signal envoy", "pid", pid, "signal", "SIGTERM", "err", err)
	}
	if err, done := wait(s.cfg.StopTimeout); done {
		s.log.Info("envoy stopped", "pid", pid, "status", exitStatus(err))
		return
	}
	s.log.Warn("envoy ignored SIGTERM; killing it", "pid", pid, "timeout", s.cfg.StopTimeout)
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Warn("signal envoy", "pid", pid, "signal", "SIGKILL", "err", err)
	}
	err := <-exited
	s.log.Info("envoy killed", "pid", pid, "status", exitStatus(err))
}

// exitStatus describes how a process ended: "exit 1", "signal killed".
func exitStatus(err error) string {
	if err == nil {
		return "exit 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "signal " + ws.Signal().String()
		}
		return "exit " + strconv.Itoa(ee.ExitCode())
	}
	return err.Error()
}
