package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// FileAllocatorFile is the name of the state file a FileAllocator keeps in
// its state directory.
const FileAllocatorFile = "identities.json"

// FileAllocator hands out label-set identities and persists the mapping as
// JSON in a state directory, so that an agent restart gives every label set
// the number it had before.
//
// Reference counts live in memory only: after a restart every identity is
// unreferenced until someone allocates it again. An unreferenced identity
// keeps its number (and its place in the file); a new label set gets a fresh
// number above every number on record. Only when the identity space is
// exhausted is the lowest unreferenced number reused. Every change of the
// mapping is written to a temporary file, synced and renamed over the state
// file. Not safe for concurrent use.
type FileAllocator struct {
	path  string
	byKey map[string]ID
	byID  map[ID]*allocEntry
	next  ID
}

var _ Allocator = (*FileAllocator)(nil)

type fileAllocatorState struct {
	Version    int        `json:"version"`
	Next       ID         `json:"next"`
	Identities []Identity `json:"identities"`
}

// NewFileAllocator opens (or creates) the allocator state in stateDir.
func NewFileAllocator(stateDir string) (*FileAllocator, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create identity state dir %s: %w", stateDir, err)
	}
	a := &FileAllocator{
		path:  filepath.Join(stateDir, FileAllocatorFile),
		byKey: map[string]ID{},
		byID:  map[ID]*allocEntry{},
		next:  IDFirstAllocated,
	}
	data, err := os.ReadFile(a.path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity state: %w", err)
	}
	var st fileAllocatorState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decode identity state %s: %w", a.path, err)
	}
	if st.Version != 1 {
		return nil, fmt.Errorf("decode identity state %s: unsupported version %d", a.path, st.Version)
	}
	for _, idn := range st.Identities {
		if idn.ID < IDFirstAllocated || idn.ID >= IDLocalFlag {
			return nil, fmt.Errorf("decode identity state %s: identity %d out of range", a.path, idn.ID)
		}
		key := idn.Labels.Key()
		if _, dup := a.byKey[key]; dup {
			return nil, fmt.Errorf("decode identity state %s: label set %s listed twice", a.path, key)
		}
		if _, dup := a.byID[idn.ID]; dup {
			return nil, fmt.Errorf("decode identity state %s: identity %d listed twice", a.path, idn.ID)
		}
		a.byKey[key] = idn.ID
		a.byID[idn.ID] = &allocEntry{labels: idn.Labels, key: key}
		if idn.ID >= a.next {
			a.next = idn.ID + 1
		}
	}
	if st.Next > a.next && st.Next <= IDLocalFlag {
		a.next = st.Next
	}
	return a, nil
}

// Allocate implements Allocator.
func (a *FileAllocator) Allocate(ls Labels) (ID, error) {
	key := ls.Key()
	if id, ok := a.byKey[key]; ok {
		a.byID[id].refs++
		return id, nil
	}
	id, evicted, err := a.pick()
	if err != nil {
		return 0, fmt.Errorf("allocate identity for %s: %w", key, err)
	}
	prevNext := a.next
	if evicted != nil {
		delete(a.byKey, evicted.key)
	} else {
		a.next++
	}
	e := &allocEntry{labels: allocCloneLabels(ls), key: key, refs: 1}
	a.byKey[key] = id
	a.byID[id] = e
	if err := a.save(); err != nil {
		// Roll back so memory and disk agree.
		delete(a.byKey, key)
		delete(a.byID, id)
		if evicted != nil {
			a.byKey[evicted.key] = id
			a.byID[id] = evicted
		}
		a.next = prevNext
		return 0, fmt.Errorf("allocate identity for %s: %w", key, err)
	}
	return id, nil
}

// pick chooses the number for a new label set: the next fresh one, or when
// the space is exhausted the lowest unreferenced one (returned as evicted).
func (a *FileAllocator) pick() (ID, *allocEntry, error) {
	if a.next < IDLocalFlag {
		return a.next, nil, nil
	}
	ids := make([]ID, 0, len(a.byID))
	for id, e := range a.byID {
		if e.refs == 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return 0, nil, errors.New("identity space exhausted")
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids[0], a.byID[ids[0]], nil
}

// Release implements Allocator. The mapping stays on record.
func (a *FileAllocator) Release(id ID) error {
	e, ok := a.byID[id]
	if !ok || e.refs == 0 {
		return fmt.Errorf("release identity %d: not referenced", id)
	}
	e.refs--
	return nil
}

// Lookup implements Allocator. It also knows unreferenced identities on
// record.
func (a *FileAllocator) Lookup(id ID) (Labels, bool) {
	e, ok := a.byID[id]
	if !ok {
		return nil, false
	}
	return e.labels, true
}

func (a *FileAllocator) save() error {
	st := fileAllocatorState{Version: 1, Next: a.next, Identities: make([]Identity, 0, len(a.byID))}
	for id, e := range a.byID {
		st.Identities = append(st.Identities, Identity{ID: id, Labels: e.labels})
	}
	sort.Slice(st.Identities, func(i, j int) bool { return st.Identities[i].ID < st.Identities[j].ID })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode identity state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(a.path), FileAllocatorFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write identity state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write identity state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync identity state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write identity state: %w", err)
	}
	if err := os.Rename(tmp.Name(), a.path); err != nil {
		return fmt.Errorf("replace identity state: %w", err)
	}
	if d, err := os.Open(filepath.Dir(a.path)); err == nil {
		_ = d.Sync() // best effort: make the rename durable
		d.Close()
	}
	return nil
}
