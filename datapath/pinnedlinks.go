package datapath

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// linkPins keeps the bpf links of one kind of attach point (tc hooks, XDP
// interfaces, sock_ops cgroups) pinned under PinRoot/links, one file per
// attach point. Every kind has its own name pattern, so the kinds share the
// directory and each finds its own links again after a restart. The link
// table (by attach point key K) belongs to the caller, who holds its lock.
type linkPins[K comparable] struct {
	dir   string                 // PinRoot/links
	kind  string                 // "tcx", "xdp", "sockops": for messages
	name  func(K) string         // pin file name of an attach point
	parse func(string) (K, bool) // inverse of name; false for other kinds' pins
	// pinHint is appended to a failed pin's error: what the kernel lacks.
	pinHint string
	log     *slog.Logger
}

func linksDir(pinRoot string) string { return filepath.Join(pinRoot, "links") }

// adopt loads the links a previous instance pinned into links and points
// each at prog(key); a nil prog(key) leaves the link's program as it is
// (an upgrade swaps it later). A pin that does not load is removed; a link
// whose program cannot be replaced (its attach point is gone) is unpinned.
func (p linkPins[K]) adopt(links map[K]link.Link, prog func(K) *ebpf.Program) error {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("read pinned links: %w", err)
	}
	for _, e := range entries {
		k, ok := p.parse(e.Name())
		if !ok {
			continue
		}
		path := filepath.Join(p.dir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			p.log.Warn("dropping unloadable pinned "+p.kind+" link", "path", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		if pg := prog(k); pg != nil {
			if err := l.Update(pg); err != nil {
				p.log.Warn("dropping stale pinned "+p.kind+" link", "path", path, "err", err)
				_ = l.Unpin()
				_ = l.Close()
				continue
			}
		}
		links[k] = l
	}
	return nil
}

// update swaps prog into the link at k in place. found is false when there
// is no link at k yet (the caller attaches one).
func (p linkPins[K]) update(links map[K]link.Link, k K, prog *ebpf.Program, where string) (found bool, err error) {
	l, ok := links[k]
	if !ok {
		return false, nil
	}
	if err := l.Update(prog); err != nil {
		return true, fmt.Errorf("update %s link on %s: %w", p.kind, where, err)
	}
	return true, nil
}

// pin pins a link just attached at k and records it in links; when pinning
// fails the link is closed, which detaches it.
func (p linkPins[K]) pin(links map[K]link.Link, k K, l link.Link, where string) error {
	if err := l.Pin(filepath.Join(p.dir, p.name(k))); err != nil {
		l.Close()
		return fmt.Errorf("pin %s link on %s%s: %w", p.kind, where, p.pinHint, err)
	}
	links[k] = l
	return nil
}

// release unpins and closes the link at k, which detaches it, and forgets
// it. No link at k is not an error.
func (p linkPins[K]) release(links map[K]link.Link, k K, where string) error {
	l, ok := links[k]
	if !ok {
		return nil
	}
	delete(links, k)
	var errs []error
	if err := l.Unpin(); err != nil {
		errs = append(errs, fmt.Errorf("unpin %s link on %s: %w", p.kind, where, err))
	}
	errs = append(errs, l.Close())
	return errors.Join(errs...)
}

// closeLinks closes every link's file descriptor; the pins stay, so the
// links stay attached.
func closeLinks[K comparable](links map[K]link.Link) error {
	var errs []error
	for _, l := range links {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// unpinLinks unpins (and so detaches) the pinned links in dir whose name
// matches; a nil match takes every link. A missing dir is not an error.
func unpinLinks(dir string, match func(string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read pinned links: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if match != nil && !match(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", path, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin link %s: %w", path, err))
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// cleanupPins unpins the links under root/links whose name matches and
// removes the named map pins under root.
func cleanupPins(root string, match func(string) bool, maps []string) error {
	errs := []error{unpinLinks(linksDir(root), match)}
	for _, m := range maps {
		path := filepath.Join(root, m)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pinned map %s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// linkSet is the lock-guarded table of pinned links of a program that has
// one link per attach point (Prefilter, SockOps). mu also guards the
// embedding type's other state.
type linkSet[K comparable] struct {
	mu     sync.Mutex
	links  map[K]link.Link // pinned
	closed bool
}

// attached returns the attach points that have a link.
func (s *linkSet[K]) attached() []K {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.links))
}

// close closes the links' file descriptors (the pins stay, so the links
// stay attached) and then objs, once.
func (s *linkSet[K]) close(objs io.Closer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return errors.Join(closeLinks(s.links), objs.Close())
}
