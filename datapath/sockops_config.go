package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// SockOpsConfig configures the TCP health program (SockOps).
type SockOpsConfig struct {
	// PinRoot is the bpffs directory for the pinned maps and cgroup links;
	// the same root as the Datapath's (default DefaultPinRoot).
	PinRoot string
	// Cgroup is the cgroup v2 directory Attach uses when given "": the
	// program sees the TCP sockets of that cgroup and its descendants.
	// Default: DefaultCgroupRoot().
	Cgroup string
	// EventsPerSecond limits the TCP events each CPU may emit per second
	// (token bucket, EventsBurst deep); both 0 means 1000/s, burst 200.
	// Set EventsBurst alone (rate 0) for no limit.
	EventsPerSecond uint32
	EventsBurst     uint32
	// SYNTimeout is how long an unanswered SYN waits before it is reported
	// (checked at each SYN retransmission timeout and at close). Default 1s,
	// the kernel's initial SYN RTO.
	SYNTimeout time.Duration
	// RTTInterval is the least time between two RTT events of one socket
	// (default 1s); RetransInterval the same for retransmit events.
	RTTInterval     time.Duration
	RetransInterval time.Duration
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock used to stamp events; nil means time.Now.
	Now func() time.Time
}

// DefaultCgroupRoot returns the cgroup v2 root: /sys/fs/cgroup on a unified
// hierarchy, /sys/fs/cgroup/unified on a hybrid one.
func DefaultCgroupRoot() string {
	for _, dir := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	return "/sys/fs/cgroup"
}

// WithDefaults fills unset fields with defaults.
func (c SockOpsConfig) WithDefaults() SockOpsConfig {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.Cgroup == "" {
		c.Cgroup = DefaultCgroupRoot()
	}
	if c.EventsPerSecond == 0 && c.EventsBurst == 0 {
		c.EventsPerSecond = 1000
		c.EventsBurst = 200
	}
	if c.SYNTimeout == 0 {
		c.SYNTimeout = time.Second
	}
	if c.RTTInterval == 0 {
		c.RTTInterval = time.Second
	}
	if c.RetransInterval == 0 {
		c.RetransInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports configuration errors.
func (c SockOpsConfig) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.PinRoot) || filepath.Clean(c.PinRoot) == "/" {
		errs = append(errs, fmt.Errorf("pinRoot %q: must be an absolute path below a bpffs mount", c.PinRoot))
	}
	if !filepath.IsAbs(c.Cgroup) {
		errs = append(errs, fmt.Errorf("cgroup %q: must be an absolute path", c.Cgroup))
	}
	for name, d := range map[string]time.Duration{
		"synTimeout": c.SYNTimeout, "rttInterval": c.RTTInterval, "retransInterval": c.RetransInterval,
	} {
		if d < 0 || d > time.Hour {
			errs = append(errs, fmt.Errorf("%s %v: must be between 0 and 1h", name, d))
		}
	}
	return errors.Join(errs...)
}
