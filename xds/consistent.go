package xds

import (
	"crypto/sha256"
	"maps"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// consistentMemoSize is how many snapshot contents are remembered as
// consistent: enough for the nodes of one push that share their resources.
const consistentMemoSize = 16

// consistentMemo remembers the digests of snapshot contents that passed
// Consistent(), which unpacks every HTTP connection manager of every
// listener: the same content pushed to many nodes is checked once.
type consistentMemo struct {
	mu      sync.Mutex
	digests [][sha256.Size]byte // most recent last
}

// check runs snap.Consistent() unless the same content passed before. The
// snapshot's version map must be built.
func (m *consistentMemo) check(snap *cache.Snapshot) error {
	d := digest(snap.VersionMap)
	m.mu.Lock()
	seen := slices.Contains(m.digests, d)
	m.mu.Unlock()
	if seen {
		return nil
	}
	if err := snap.Consistent(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.Contains(m.digests, d) {
		m.digests = append(m.digests, d)
		if len(m.digests) > consistentMemoSize {
			m.digests = m.digests[1:]
		}
	}
	return nil
}

// digest hashes a version map (type URL → resource name → content hash) in
// a canonical order.
func digest(versions map[string]map[string]string) [sha256.Size]byte {
	h := sha256.New()
	for _, typeURL := range slices.Sorted(maps.Keys(versions)) {
		names := versions[typeURL]
		for _, name := range slices.Sorted(maps.Keys(names)) {
			h.Write([]byte(typeURL))
			h.Write([]byte{0})
			h.Write([]byte(name))
			h.Write([]byte{0})
			h.Write([]byte(names[name]))
			h.Write([]byte{'\n'})
		}
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}
