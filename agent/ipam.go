package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// ipam.go owns moat-cni's address allocation: addresses of the node's pod
// CIDR (Node.spec.podCIDRs, or the configured cniPodCIDR), one per CNI
// attachment, persisted in the state dir (written before ADD answers, so a
// restarted agent never hands an address out twice) and released on DEL
// and GC. It is safe for concurrent use; every change is written to disk
// (temporary file, fsync, rename) before it is returned.

// ipamFile is the allocation file's name under StateDir.
const ipamFile = "cni-ipam.json"

// errPoolExhausted says every address of the pool is in use.
var errPoolExhausted = errors.New("address pool exhausted")

type ipam struct {
	path string

	mu   sync.Mutex
	pool netip.Prefix
	// owners maps each allocated address to its owner (an attachment key).
	owners map[netip.Addr]string
}

type ipamState struct {
	Allocations map[string]string `json:"allocations"` // address → owner
}

// openIPAM reads the allocations persisted under dir (none when the file
// does not exist).
func openIPAM(dir string) (*ipam, error) {
	m := &ipam{path: filepath.Join(dir, ipamFile), owners: map[netip.Addr]string{}}
	data, err := os.ReadFile(m.path)
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read address allocations: %w", err)
	}
	var st ipamState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("read address allocations %s: %w", m.path, err)
	}
	for a, owner := range st.Allocations {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("read address allocations %s: %q: %w", m.path, a, err)
		}
		m.owners[addr] = owner
	}
	return m, nil
}

// setPool sets the prefix new addresses come from. Addresses allocated
// from an earlier pool stay allocated until released.
func (m *ipam) setPool(p netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pool = p.Masked()
}

// Pool returns the current pool (invalid when none is known yet).
func (m *ipam) Pool() netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pool
}

// allocate returns owner's address, allocating the lowest free one of the
// pool when owner has none. The pool's network address and (IPv4) its
// broadcast address are never handed out.
func (m *ipam) allocate(owner string) (netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for a, o := range m.owners {
		if o == owner {
			return a, nil
		}
	}
	if !m.pool.IsValid() {
		return netip.Addr{}, errors.New("allocate address: no pod CIDR: the Node has no spec.podCIDR and cniPodCIDR is not set")
	}
	a, ok := m.freeLocked()
	if !ok {
		return netip.Addr{}, fmt.Errorf("allocate address for %s: %w: %s has %d addresses in use", owner, errPoolExhausted, m.pool, m.inPoolLocked())
	}
	m.owners[a] = owner
	if err := m.saveLocked(); err != nil {
		delete(m.owners, a)
		return netip.Addr{}, err
	}
	return a, nil
}

func (m *ipam) freeLocked() (netip.Addr, bool) {
	first := m.pool.Addr().Next() // not the network address
	for a := first; a.IsValid() && m.pool.Contains(a); a = a.Next() {
		if m.pool.Addr().Is4() && m.pool.Bits() < 31 && !m.pool.Contains(a.Next()) {
			break // the broadcast address
		}
		if _, used := m.owners[a]; !used {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (m *ipam) inPoolLocked() int {
	n := 0
	for a := range m.owners {
		if m.pool.Contains(a) {
			n++
		}
	}
	return n
}

// release frees owner's address; releasing nothing is not an error.
func (m *ipam) release(owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var freed []netip.Addr
	for a, o := range m.owners {
		if o == owner {
			freed = append(freed, a)
			delete(m.owners, a)
		}
	}
	if len(freed) == 0 {
		return nil
	}
	if err := m.saveLocked(); err != nil {
		for _, a := range freed {
			m.owners[a] = owner
		}
		return err
	}
	return nil
}

// allocated returns the allocations, sorted by address.
func (m *ipam) allocated() map[netip.Addr]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[netip.Addr]string, len(m.owners))
	for a, o := range m.owners {
		out[a] = o
	}
	return out
}

func (m *ipam) saveLocked() error {
	st := ipamState{Allocations: make(map[string]string, len(m.owners))}
	addrs := make([]netip.Addr, 0, len(m.owners))
	for a := range m.owners {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		st.Allocations[a.String()] = m.owners[a]
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode address allocations: %w", err)
	}
	if err := writeFileAtomic(m.path, data, 0o600); err != nil {
		return fmt.Errorf("write address allocations: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed over path: readers see the old or the new
// content, never a part.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename: nothing to remove
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
