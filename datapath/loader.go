package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Datapath is the loaded programs and pinned maps. Methods are safe for
// concurrent use.
type Datapath struct {
	cfg  Config
	log  *slog.Logger
	objs moatObjects

	mu       sync.Mutex
	links    map[linkKey]link.Link // TCX links, pinned
	tcFilter map[linkKey]bool      // legacy tc filters we installed
	state    syncState
	closed   bool
	// scrubbing: a goroutine zeroes the freed rule indices (scrubSoon);
	// Close waits for it.
	scrubbing bool
	scrubs    sync.WaitGroup

	// upgrade, while set, is an upgrade over pinned maps of another
	// layout that waits for the first Sync (upgrade.go).
	upgrade *upgrade

	// putEndpointHook, when set (tests only), runs before every endpoint
	// config write of Sync and fails it by returning an error.
	putEndpointHook func(id uint32, cfg *moatEndpointConfig) error
	// writes counts Sync's entry writes (mapwrites.go).
	writes mapWrites
}

// Open loads the programs, reusing maps pinned under cfg.PinRoot (creating
// and pinning them on first start), and swaps the programs of every pinned
// link to the freshly loaded ones, so enforcement continues across restarts.
//
// When the pin root did not exist and Open fails, it removes what it pinned:
// a node whose first start failed (a kernel that refuses the programs, say)
// is left as it was, and an older build can still start there. Over an
// existing root it removes nothing, since older programs may be enforcing.
func Open(cfg Config) (*Datapath, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate datapath config: %w", err)
	}
	_, statErr := os.Stat(cfg.PinRoot)
	fresh := errors.Is(statErr, os.ErrNotExist)
	if err := ensurePinRoot(cfg.PinRoot); err != nil {
		return nil, err
	}
	d, err := open(cfg)
	if err != nil && fresh {
		if rerr := os.RemoveAll(cfg.PinRoot); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the pins of the failed start: %w", rerr))
		}
	}
	return d, err
}

// sizeCT gives moat_ct the configured size. A pinned moat_ct of another
// size is migrated into a new map of the configured size by an upgrade
// (see upgrade.go): its entries are copied, so no tracked flow is lost.
func sizeCT(spec *ebpf.CollectionSpec, cfg Config) {
	spec.Maps["moat_ct"].MaxEntries = uint32(cfg.CTMaxEntries)
}

// openFault, when set (by tests), fails open after the maps are pinned.
var openFault func() error

func open(cfg Config) (*Datapath, error) {
	spec, err := loadMoat()
	if err != nil {
		return nil, fmt.Errorf("load embedded bpf spec: %w", err)
	}
	if err := setVariables(spec, cfg); err != nil {
		return nil, err
	}
	d := &Datapath{
		cfg:      cfg,
		log:      cfg.Logger,
		links:    map[linkKey]link.Link{},
		tcFilter: map[linkKey]bool{},
	}
	sizeCT(spec, cfg)
	up, err := stageUpgrade(spec, cfg.PinRoot)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Datapath, error) {
		d.objs.Close()
		if up != nil {
			up.close()
		}
		return nil, err
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinRoot}}
	if err := spec.LoadAndAssign(&d.objs, opts); err != nil {
		if up != nil {
			up.close()
		}
		return nil, explainLoadError(err)
	}
	if up != nil {
		if err := up.adoptUpgradeMaps(mapsByName(&d.objs.moatMaps)); err != nil {
			return fail(err)
		}
	}
	if openFault != nil {
		if err := openFault(); err != nil {
			return fail(err)
		}
	}
	if err := d.state.load(&d.objs); err != nil {
		return fail(err)
	}
	if up != nil {
		// Tracked flows carry the old endpoint map's revisions: the new
		// map's must not repeat them.
		if old, ok := up.old["moat_endpoints"]; ok {
			d.state.nextRev = max(d.state.nextRev, maxRevision(old)+1)
		}
		d.upgrade = up
		cfg.Logger.Warn("pinned maps have another layout: new maps wait beside them; the programs swap after the first sync",
			"maps", strings.Join(up.why, "; "))
	}
	// CT entries made by earlier programs (or before this start) go through
	// the endpoint check once more.
	if err := d.bumpGeneration(); err != nil {
		return fail(err)
	}
	if err := d.adoptLinks(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// mapsByName returns the loaded maps by their names in the object.
func mapsByName(m *moatMaps) map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if mp, ok := v.Field(i).Interface().(*ebpf.Map); ok && name != "" && mp != nil {
			out[name] = mp
		}
	}
	return out
}

// Close releases file descriptors. Pinned maps and links stay: the programs
// keep enforcing until the next Open swaps them or Cleanup removes them.
func (d *Datapath) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.scrubs.Wait() // it uses the maps' descriptors without d.mu
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.upgrade != nil {
		// The old programs and pins stay: they keep enforcing.
		d.upgrade.close()
		d.upgrade = nil
	}
	return errors.Join(closeLinks(d.links), d.objs.Close())
}

// Config returns the configuration in effect (with defaults).
func (d *Datapath) Config() Config { return d.cfg }

func setVariables(spec *ebpf.CollectionSpec, cfg Config) error {
	mask := uint32(1<<evDrop | 1<<evToProxy)
	if cfg.VerdictEvents {
		mask |= 1 << evVerdict
	}
	vars := map[string]uint32{
		"events_rate":         cfg.EventsPerSecond,
		"events_burst":        cfg.EventsBurst,
		"events_mask":         mask,
		"ct_lifetime_tcp":     ctTicks(cfg.CTLifetimeTCP),
		"ct_lifetime_syn":     ctTicks(cfg.CTLifetimeSYN),
		"ct_lifetime_closing": ctTicks(cfg.CTLifetimeClosing),
		"ct_lifetime_other":   ctTicks(cfg.CTLifetimeOther),
		"local_delivery_on":   1,
	}
	if cfg.NoLocalDelivery {
		vars["local_delivery_on"] = 0
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set bpf variable %s: not in the object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set bpf variable %s: %w", name, err)
		}
	}
	return nil
}

// ensurePinRoot mounts bpffs on the pin root's parent when needed and
// creates the pin root and its links directory.
func ensurePinRoot(root string) error {
	parent := filepath.Dir(root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", parent, err)
	}
	onBPF, err := isBPFFS(parent)
	if err != nil {
		return err
	}
	if !onBPF {
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s (needs CAP_SYS_ADMIN in the host mount namespace): %w", parent, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "links"), 0o700); err != nil {
		return fmt.Errorf("create pin directory %s: %w", root, err)
	}
	return nil
}

func isBPFFS(dir string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// explainLoadError turns a load failure into an error that says what the
// kernel refused: the verifier log's tail, or the incompatible pinned map.
func explainLoadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		log := ve.Log
		if len(log) > 30 {
			log = log[len(log)-30:]
		}
		return fmt.Errorf("load bpf programs: kernel verifier refused (%v); log tail:\n%s", ve.Cause, strings.Join(log, "\n"))
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load bpf programs: a pinned map has another layout than the upgrade check found (run `moat-agent cleanup` to start afresh): %w", err)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("load bpf programs: permission denied (needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON or root): %w", err)
	}
	return fmt.Errorf("load bpf programs: %w", err)
}

// ctTickShift is CT_TICK_SHIFT of bpf/ct.h: the programs count CT time in
// ticks of 2^30 ns of the coarse clock.
const ctTickShift = 30

// ctTicks converts a CT lifetime to ticks, rounding up so that no flow
// lives shorter than configured.
func ctTicks(d time.Duration) uint32 {
	const tick = int64(1) << ctTickShift
	return uint32((d.Nanoseconds() + tick - 1) / tick)
}
