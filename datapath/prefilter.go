package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// XDPMode selects how the prefilter is attached to an interface.
type XDPMode string

// XDP modes.
const (
	XDPAuto    XDPMode = ""        // native (driver) XDP, falling back to generic
	XDPNative  XDPMode = "native"  // driver XDP only
	XDPGeneric XDPMode = "generic" // generic (skb) XDP only
)

// PrefilterConfig configures a Prefilter.
type PrefilterConfig struct {
	// PinRoot is the bpffs directory for the pinned maps and XDP links; the
	// same root as the Datapath's (default DefaultPinRoot).
	PinRoot string
	// Logger receives operational messages; nil means slog.Default().
	Logger *slog.Logger
}

// WithDefaults fills unset fields with defaults.
func (c PrefilterConfig) WithDefaults() PrefilterConfig {
	if c.PinRoot == "" {
		c.PinRoot = DefaultPinRoot
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports configuration errors.
func (c PrefilterConfig) Validate() error {
	if !filepath.IsAbs(c.PinRoot) || filepath.Clean(c.PinRoot) == "/" {
		return fmt.Errorf("pinRoot %q: must be an absolute path below a bpffs mount", c.PinRoot)
	}
	return nil
}

// Prefilter is the XDP CIDR deny list (bpf/xdp.c): packets whose source
// address is in the list are dropped before the stack on every interface
// it is attached to, and counted per prefix and in total. The list
// (moat_prefilter), the counters (moat_pf_stats) and the XDP links are
// pinned under the PinRoot; a restarted agent adopts them. Methods are safe
// for concurrent use.
type Prefilter struct {
	cfg  PrefilterConfig
	log  *slog.Logger
	objs prefilterObjects

	linkSet[int] // by ifindex
}

// OpenPrefilter loads the program, reusing the maps pinned under
// cfg.PinRoot, and adopts the XDP links a previous instance pinned.
func OpenPrefilter(cfg PrefilterConfig) (*Prefilter, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("validate prefilter config: %w", err)
	}
	if err := ensurePinRoot(cfg.PinRoot); err != nil {
		return nil, err
	}
	spec, err := loadPrefilter()
	if err != nil {
		return nil, fmt.Errorf("load embedded prefilter spec: %w", err)
	}
	p := &Prefilter{cfg: cfg, log: cfg.Logger, linkSet: linkSet[int]{links: map[int]link.Link{}}}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinRoot}}
	if err := spec.LoadAndAssign(&p.objs, opts); err != nil {
		return nil, explainLoadError(err)
	}
	if err := p.adoptLinks(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

const xdpPinSuffix = "-xdp"

func xdpPinName(ifindex int) string { return strconv.Itoa(ifindex) + xdpPinSuffix }

func parseXDPPinName(name string) (int, bool) {
	rest, ok := strings.CutSuffix(name, xdpPinSuffix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n > 0
}

// pins are the Prefilter's XDP links under PinRoot/links.
func (p *Prefilter) pins() linkPins[int] {
	return linkPins[int]{dir: linksDir(p.cfg.PinRoot), kind: "xdp", name: xdpPinName, parse: parseXDPPinName, log: p.log}
}

func (p *Prefilter) adoptLinks() error {
	return p.pins().adopt(p.links, func(int) *ebpf.Program { return p.objs.MoatXdpPrefilter })
}

func ifindexWhere(ifindex int) string { return "ifindex " + strconv.Itoa(ifindex) }

// Attach attaches the prefilter to the interface with index ifindex in the
// given mode (XDPAuto: native, falling back to generic when the driver
// cannot) and pins the link. Attaching again swaps the program in place.
func (p *Prefilter) Attach(ifindex int, mode XDPMode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("attach prefilter: closed")
	}
	if found, err := p.pins().update(p.links, ifindex, p.objs.MoatXdpPrefilter, ifindexWhere(ifindex)); found {
		return err
	}
	var l link.Link
	var err error
	switch mode {
	case XDPNative:
		l, err = p.attachXDP(ifindex, link.XDPDriverMode)
	case XDPGeneric:
		l, err = p.attachXDP(ifindex, link.XDPGenericMode)
	case XDPAuto:
		l, err = p.attachXDP(ifindex, link.XDPDriverMode)
		if err != nil {
			p.log.Info("native xdp unavailable, falling back to generic", "ifindex", ifindex, "err", err)
			l, err = p.attachXDP(ifindex, link.XDPGenericMode)
		}
	default:
		return fmt.Errorf("attach prefilter on ifindex %d: mode %q: must be one of \"\", native, generic", ifindex, mode)
	}
	if err != nil {
		return err
	}
	return p.pins().pin(p.links, ifindex, l, ifindexWhere(ifindex))
}

func (p *Prefilter) attachXDP(ifindex int, flags link.XDPAttachFlags) (link.Link, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: p.objs.MoatXdpPrefilter, Interface: ifindex, Flags: flags})
	if err != nil {
		mode := "native"
		if flags == link.XDPGenericMode {
			mode = "generic"
		}
		return nil, fmt.Errorf("attach %s xdp on ifindex %d: %w", mode, ifindex, err)
	}
	return l, nil
}

// Detach removes the prefilter from the interface. An interface without it
// is not an error.
func (p *Prefilter) Detach(ifindex int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pins().release(p.links, ifindex, ifindexWhere(ifindex))
}

// Attached returns the interfaces the prefilter is attached to.
func (p *Prefilter) Attached() []int {
	return p.attached()
}

// Close releases file descriptors. Pinned maps and links stay: packets
// keep being filtered until the next OpenPrefilter swaps the program or
// CleanupPrefilter removes it.
func (p *Prefilter) Close() error {
	return p.close(&p.objs)
}

// Cleanup detaches the prefilter from every interface, removes its pins and
// closes the Prefilter.
func (p *Prefilter) Cleanup() error {
	cfg := p.cfg
	err := p.Close()
	return errors.Join(err, CleanupPrefilter(cfg))
}

// CleanupPrefilter removes everything a Prefilter with cfg left behind,
// without loading the program: the pinned XDP links (which detaches them)
// and the pinned maps. The Datapath's pins under the same root stay.
func CleanupPrefilter(cfg PrefilterConfig) error {
	cfg = cfg.WithDefaults()
	return cleanupPins(cfg.PinRoot, func(name string) bool {
		_, ok := parseXDPPinName(name)
		return ok
	}, []string{"moat_prefilter", "moat_pf_stats"})
}
