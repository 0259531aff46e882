package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"
)

// AttachMode selects how programs are attached to interfaces.
type AttachMode string

// Attach modes.
const (
	AttachAuto AttachMode = ""    // TCX, or legacy tc when TCX is unavailable
	AttachTCX  AttachMode = "tcx" // TCX links only
	AttachTC   AttachMode = "tc"  // legacy tc clsact + bpf filters only
)

// DefaultPinRoot is where maps and links are pinned by default.
const DefaultPinRoot = "/sys/fs/bpf/moat"

// Config configures a Datapath.
type Config struct {
	// PinRoot is the bpffs directory that holds the pinned maps and links.
	// bpffs is mounted on its parent when it is not mounted yet.
	PinRoot string
	// Attach selects TCX, legacy tc, or automatic choice.
	Attach AttachMode
	// EventsPerSecond limits the events each CPU may emit per second
	// (token bucket, EventsBurst deep); 0 means unlimited.
	EventsPerSecond uint32
	EventsBurst     uint32
	// VerdictEvents emits an event for every new flow's verdict, not only
	// for drops and proxy redirects.
	VerdictEvents bool
	// CT lifetimes.
	CTLifetimeTCP     time.Duration // established TCP
	CTLifetimeSYN     time.Duration // TCP before the first reply
	CTLifetimeClosing time.Duration // TCP after FIN/RST
	CTLifetimeOther   time.Duration // UDP, ICMP, others
	// NoLocalDelivery keeps every packet between two local endpoints on the
	// host's routing path. By default the packets of a flow that both ends
	// track go from veth to veth (local_delivery in bpf/moat.c), so the
	// host's netfilter sees a flow's first packets only; a host firewall
	// that drops conntrack INVALID packets in FORWARD could then drop a
	// tracked flow's packets when they take the routed path again after a
	// map change. Such hosts need this option (or nf_conntrack_tcp_be_liberal).
	NoLocalDelivery bool
	// CTMaxEntries sizes the connection-tracking map (moat_ct): one entry
	// per flow and local endpoint it crosses. It takes effect when the map
	// is created; over a pinned map of another size, the pinned map is kept
	// (its flows stay tracked) and Open logs that the new size needs
	// `moat-agent cleanup`.
	CTMaxEntries int
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock used to stamp events; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{}.WithDefaults()
}

// WithDefaults fills unset fields with defaults.
func (c Config) WithDefaults() Config {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.EventsPerSecond == 0 && c.EventsBurst == 0 {
		c.EventsPerSecond = 1000
		c.EventsBurst = 200
	}
	if c.CTLifetimeTCP == 0 {
		c.CTLifetimeTCP = 6 * time.Hour
	}
	if c.CTLifetimeSYN == 0 {
		c.CTLifetimeSYN = time.Minute
	}
	if c.CTLifetimeClosing == 0 {
		c.CTLifetimeClosing = 10 * time.Second
	}
	if c.CTLifetimeOther == 0 {
		c.CTLifetimeOther = time.Minute
	}
	if c.CTMaxEntries == 0 {
		c.CTMaxEntries = DefaultCTMaxEntries
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
func (c Config) Validate() error {
	var errs []error
	if !filepath.IsAbs(c.PinRoot) || filepath.Clean(c.PinRoot) == "/" {
		errs = append(errs, fmt.Errorf("pinRoot %q: must be an absolute path below a bpffs mount", c.PinRoot))
	}
	switch c.Attach {
	case AttachAuto, AttachTCX, AttachTC:
	default:
		errs = append(errs, fmt.Errorf("attach %q: must be one of \"\", tcx, tc", c.Attach))
	}
	for name, d := range map[string]time.Duration{
		"ctLifetimeTCP": c.CTLifetimeTCP, "ctLifetimeSYN": c.CTLifetimeSYN,
		"ctLifetimeClosing": c.CTLifetimeClosing, "ctLifetimeOther": c.CTLifetimeOther,
	} {
		if d < time.Second || d > 1<<31*time.Second {
			errs = append(errs, fmt.Errorf("%s %v: must be between 1s and 2^31s", name, d))
		}
	}
	if c.CTMaxEntries < MinCTMaxEntries || c.CTMaxEntries > MaxCTMaxEntries {
		errs = append(errs, fmt.Errorf("ctMaxEntries %d: must be between %d and %d", c.CTMaxEntries, MinCTMaxEntries, MaxCTMaxEntries))
	}
	return errors.Join(errs...)
}

// Bounds of Config.CTMaxEntries. An entry takes about 152 bytes of kernel
// memory (key, value and the hash map's element header), preallocated:
// the default costs 38 MiB (memlock 39,846,848 bytes on Linux 6.18), the
// maximum about 2.4 GiB.
const (
	DefaultCTMaxEntries = 1 << 18
	MinCTMaxEntries     = 1 << 10
	MaxCTMaxEntries     = 1 << 24
)
