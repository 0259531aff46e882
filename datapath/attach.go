package datapath

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hook is a tc attach point: of a host-side veth, or of an uplink.
type hook uint8

const (
	hookIngress hook = iota // tc ingress of a veth: from_endpoint (the endpoint's egress policy)
	hookEgress              // tc egress of a veth: to_endpoint (the endpoint's ingress policy)
	hookUplink              // tc ingress of an uplink: from_uplink (proxy upstream replies)
)

func (h hook) String() string {
	switch h {
	case hookEgress:
		return "egress"
	case hookUplink:
		return "uplink"
	}
	return "ingress"
}

type linkKey struct {
	ifindex int
	hook    hook
}

func (k linkKey) pinName() string { return fmt.Sprintf("%d-tc-%s", k.ifindex, k.hook) }

// tcFilterName names moat's legacy tc filters, so Cleanup can find them.
func (k linkKey) tcFilterName() string {
	switch k.hook {
	case hookEgress:
		return "moat-to-endpoint"
	case hookUplink:
		return "moat-from-uplink"
	}
	return "moat-from-endpoint"
}

func parsePinName(name string) (linkKey, bool) {
	idx, rest, ok := strings.Cut(name, "-tc-")
	if !ok {
		return linkKey{}, false
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n <= 0 {
		return linkKey{}, false
	}
	switch rest {
	case "ingress":
		return linkKey{n, hookIngress}, true
	case "egress":
		return linkKey{n, hookEgress}, true
	case "uplink":
		return linkKey{n, hookUplink}, true
	}
	return linkKey{}, false
}

func (d *Datapath) program(h hook) *ebpf.Program {
	switch h {
	case hookEgress:
		return d.objs.ToEndpoint
	case hookUplink:
		return d.objs.FromUplink
	}
	return d.objs.FromEndpoint
}

// where names a tc attach point in messages.
func (k linkKey) where() string { return fmt.Sprintf("ifindex %d %s", k.ifindex, k.hook) }

// pins are the Datapath's TCX links under PinRoot/links.
func (d *Datapath) pins() linkPins[linkKey] {
	return linkPins[linkKey]{dir: linksDir(d.cfg.PinRoot), kind: "tcx", name: linkKey.pinName, parse: parsePinName, log: d.log}
}

// adoptLinks loads the links a previous instance pinned and points them at
// the programs just loaded. Links whose interface is gone are removed.
func (d *Datapath) adoptLinks() error {
	return d.pins().adopt(d.links, func(k linkKey) *ebpf.Program {
		if d.upgrade != nil {
			return nil // the old programs serve until the upgrade's swap
		}
		return d.program(k.hook)
	})
}

// Attach attaches the programs to the host-side veth with index ifindex:
// from_endpoint at tc ingress, to_endpoint at tc egress. Attaching again
// swaps the programs in place. Call Sync with the endpoint first: an
// interface without endpoint config drops every IP packet (fail closed).
func (d *Datapath) Attach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range []hook{hookIngress, hookEgress} {
		if err := d.attachHook(linkKey{ifindex, h}); err != nil {
			return err
		}
	}
	return nil
}

func (d *Datapath) attachHook(k linkKey) error {
	prog := d.program(k.hook)
	if d.upgrade != nil && d.upgrade.waits(k, d.links) {
		return nil // the upgrade's swap attaches it (finishUpgrade)
	}
	if found, err := d.pins().update(d.links, k, prog, k.where()); found {
		return err
	}
	if d.cfg.Attach != AttachTC {
		err := d.attachTCX(k, prog)
		if err == nil || d.cfg.Attach == AttachTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		d.log.Info("tcx unavailable, falling back to legacy tc", "ifindex", k.ifindex, "err", err)
	}
	return d.attachTC(k, prog)
}

func (d *Datapath) attachTCX(k linkKey, prog *ebpf.Program) error {
	at := ebpf.AttachTCXIngress
	if k.hook == hookEgress {
		at = ebpf.AttachTCXEgress
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: k.ifindex, Program: prog, Attach: at})
	if err != nil {
		return fmt.Errorf("attach tcx %s on ifindex %d: %w", k.hook, k.ifindex, err)
	}
	return d.pins().pin(d.links, k, l, k.where())
}

func (d *Datapath) attachTC(k linkKey, prog *ebpf.Program) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: k.ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc on ifindex %d: %w", k.ifindex, err)
	}
	if err := netlink.FilterReplace(tcFilter(k, prog.FD())); err != nil {
		return fmt.Errorf("attach tc %s filter on ifindex %d: %w", k.hook, k.ifindex, err)
	}
	d.tcFilter[k] = true
	return nil
}

func tcFilter(k linkKey, fd int) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if k.hook == hookEgress {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: k.ifindex,
			Parent:    parent,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           fd,
		Name:         k.tcFilterName(),
		DirectAction: true,
	}
}

// Detach removes the programs from the interface. A missing interface is
// not an error.
func (d *Datapath) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for _, h := range []hook{hookIngress, hookEgress} {
		errs = append(errs, d.detachHook(linkKey{ifindex, h}))
	}
	return errors.Join(errs...)
}

// detachHook removes the program at one attach point. The caller holds d.mu.
func (d *Datapath) detachHook(k linkKey) error {
	var errs []error
	errs = append(errs, d.pins().release(d.links, k, k.where()))
	if d.tcFilter[k] {
		if err := netlink.FilterDel(tcFilter(k, -1)); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete tc %s filter on ifindex %d: %w", k.hook, k.ifindex, err))
		}
		delete(d.tcFilter, k)
	}
	return errors.Join(errs...)
}

// Attached returns the interfaces that have the endpoint programs attached
// (not the uplinks: see Uplinks).
func (d *Datapath) Attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attachedWhere(func(h hook) bool { return h != hookUplink })
}

// attachedWhere returns the interfaces with a link or legacy tc filter at a
// hook that keep accepts. The caller holds d.mu.
func (d *Datapath) attachedWhere(keep func(hook) bool) []int {
	seen := map[int]bool{}
	var out []int
	for k := range d.links {
		if keep(k.hook) && !seen[k.ifindex] {
			seen[k.ifindex] = true
			out = append(out, k.ifindex)
		}
	}
	for k := range d.tcFilter {
		if keep(k.hook) && !seen[k.ifindex] {
			seen[k.ifindex] = true
			out = append(out, k.ifindex)
		}
	}
	return out
}

// SetUplinks makes from_uplink's tc ingress attachments exactly the given
// interfaces (the node's interfaces towards other nodes and the world):
// it attaches it where it is missing (swapping in place where a previous
// agent pinned it) and detaches it from every other interface. Its replies
// of proxy upstream legs that keep a client pod's address reach the
// proxy's socket only when they arrive on one of these interfaces. An
// endpoint's veth is not an uplink.
func (d *Datapath) SetUplinks(ifindexes []int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("set uplinks: datapath closed")
	}
	want := map[int]bool{}
	var errs []error
	for _, idx := range ifindexes {
		if idx <= 0 {
			errs = append(errs, fmt.Errorf("set uplinks: ifindex %d: must be positive", idx))
			continue
		}
		if d.links[linkKey{idx, hookIngress}] != nil || d.tcFilter[linkKey{idx, hookIngress}] {
			errs = append(errs, fmt.Errorf("set uplinks: ifindex %d is an endpoint's veth", idx))
			continue
		}
		want[idx] = true
		if err := d.attachHook(linkKey{idx, hookUplink}); err != nil {
			errs = append(errs, fmt.Errorf("set uplinks: %w", err))
		}
	}
	for _, idx := range d.attachedWhere(func(h hook) bool { return h == hookUplink }) {
		if !want[idx] {
			errs = append(errs, d.detachHook(linkKey{idx, hookUplink}))
		}
	}
	return errors.Join(errs...)
}

// Uplinks returns the interfaces that have from_uplink attached.
func (d *Datapath) Uplinks() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attachedWhere(func(h hook) bool { return h == hookUplink })
}
