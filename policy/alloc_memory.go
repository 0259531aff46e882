package policy

import (
	"fmt"
	"sort"
)

// MemoryAllocator hands out label-set identities from memory. It is
// deterministic: the first label set gets IDFirstAllocated (256), the next
// 257, and so on in call order; an identity whose last reference is released
// is forgotten and its number reused, lowest first. It is not safe for
// concurrent use (the compiler serialises calls).
type MemoryAllocator struct {
	byKey map[string]ID
	byID  map[ID]*allocEntry
	free  []ID // released numbers, sorted ascending
	next  ID
}

type allocEntry struct {
	labels Labels
	key    string
	refs   int
}

var _ Allocator = (*MemoryAllocator)(nil)

// NewMemoryAllocator returns an empty in-memory allocator.
func NewMemoryAllocator() *MemoryAllocator {
	return &MemoryAllocator{byKey: map[string]ID{}, byID: map[ID]*allocEntry{}, next: IDFirstAllocated}
}

// Allocate implements Allocator.
func (a *MemoryAllocator) Allocate(ls Labels) (ID, error) {
	key := ls.Key()
	if id, ok := a.byKey[key]; ok {
		a.byID[id].refs++
		return id, nil
	}
	var id ID
	if len(a.free) > 0 {
		id = a.free[0]
		a.free = a.free[1:]
	} else {
		if a.next >= IDLocalFlag {
			return 0, fmt.Errorf("allocate identity for %s: identity space exhausted", key)
		}
		id = a.next
		a.next++
	}
	a.byKey[key] = id
	a.byID[id] = &allocEntry{labels: allocCloneLabels(ls), key: key, refs: 1}
	return id, nil
}

// Release implements Allocator.
func (a *MemoryAllocator) Release(id ID) error {
	e, ok := a.byID[id]
	if !ok {
		return fmt.Errorf("release identity %d: not allocated", id)
	}
	e.refs--
	if e.refs > 0 {
		return nil
	}
	delete(a.byID, id)
	delete(a.byKey, e.key)
	i := sort.Search(len(a.free), func(i int) bool { return a.free[i] >= id })
	a.free = append(a.free, 0)
	copy(a.free[i+1:], a.free[i:])
	a.free[i] = id
	return nil
}

// Lookup implements Allocator.
func (a *MemoryAllocator) Lookup(id ID) (Labels, bool) {
	e, ok := a.byID[id]
	if !ok {
		return nil, false
	}
	return e.labels, true
}

func allocCloneLabels(ls Labels) Labels {
	out := make(Labels, len(ls))
	for k, v := range ls {
		out[k] = v
	}
	return out
}
