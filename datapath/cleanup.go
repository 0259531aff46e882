package datapath

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Cleanup detaches the programs from every interface and removes the pins,
// then closes the Datapath. Enforcement stops.
func (d *Datapath) Cleanup() error {
	cfg := d.cfg
	err := d.Close()
	return errors.Join(err, Cleanup(cfg))
}

// Cleanup removes everything a Datapath with cfg left behind, without
// loading programs: pinned TCX links (which detaches them), moat's legacy tc
// filters on every interface of the current netns, and the pinned maps.
func Cleanup(cfg Config) error { return CleanupWith(cfg, CleanupOptions{}) }

// CleanupOptions narrows what CleanupWith removes.
type CleanupOptions struct {
	// KeepTCFilters leaves moat's legacy tc filters alone. They carry no
	// pin root, so while another agent runs (on another pin root) they may
	// be its own.
	KeepTCFilters bool
}

// CleanupWith is Cleanup with options. Callers make sure that no agent runs
// on cfg.PinRoot (moat-agent cleanup holds the agent's lock).
func CleanupWith(cfg Config, opts CleanupOptions) error {
	cfg = cfg.WithDefaults()
	// Every link under the root: the XDP and sock_ops links go too.
	errs := []error{unpinLinks(linksDir(cfg.PinRoot), nil)}
	if !opts.KeepTCFilters {
		errs = append(errs, removeTCFilters())
	}
	if err := os.RemoveAll(cfg.PinRoot); err != nil {
		errs = append(errs, fmt.Errorf("remove pins under %s: %w", cfg.PinRoot, err))
	}
	return errors.Join(errs...)
}

func removeTCFilters() error {
	links, err := dump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			filters, err := netlink.FilterList(l, parent)
			if err != nil {
				continue // no clsact qdisc
			}
			for _, f := range filters {
				bf, ok := f.(*netlink.BpfFilter)
				if !ok || !strings.HasPrefix(bf.Name, "moat-") {
					continue
				}
				if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) {
					// ENODEV/ENOENT: the link or filter went away meanwhile.
					errs = append(errs, fmt.Errorf("delete tc filter %s on %s: %w", bf.Name, l.Attrs().Name, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
