package policy

import (
	"fmt"
	"sort"
)

// LocalKind is the kind of thing a node-local identity stands for. Each
// kind draws from its own range of numbers (all with IDLocalFlag set).
type LocalKind uint8

// Local identity kinds.
const (
	// LocalCIDR: a policy prefix (key: the masked prefix, "10.0.0.0/8").
	// Numbers IDLocalFlag | 1 … IDLocalFlag | (fqdnLocalBase-1).
	LocalCIDR LocalKind = iota
	// LocalFQDN: a toFQDNs selector or, for the DNS proxy, a name (key
	// chosen by the caller, e.g. "matchName=cilium.io"). Numbers
	// IDLocalFlag | fqdnLocalBase | 1 … IDLocalFlag | (1<<24 - 1).
	LocalFQDN
)

// fqdnLocalBase splits the local range between CIDR and FQDN identities.
const fqdnLocalBase ID = 1 << 23

func (k LocalKind) String() string {
	if k == LocalFQDN {
		return "fqdn"
	}
	return "cidr"
}

// base and limit of a kind's numbers: IDLocalFlag|base+1 … IDLocalFlag|limit.
func (k LocalKind) bounds() (first, last ID) {
	if k == LocalFQDN {
		return IDLocalFlag | fqdnLocalBase | 1, IDLocalFlag | (IDLocalFlag - 1)
	}
	return IDLocalFlag | 1, IDLocalFlag | (fqdnLocalBase - 1)
}

// LocalAllocator hands out node-local identities (CIDR prefixes now; FQDN
// selectors and names for the DNS proxy next) under two rules that keep
// every BPF map and proxy consistent while identities come and go:
//
//   - Stable: a key keeps its number for as long as anyone holds it, no
//     matter what else is allocated or released (a new prefix never moves
//     another one).
//   - Quarantined reuse: a number whose last holder released it is not
//     given to another key until the caller confirms, with Confirm, that
//     the generation that dropped it has been applied everywhere (the
//     datapath maps synced and every proxy has ACKed). Until then the maps
//     or a proxy may still hold entries for the old meaning, and a new key
//     on the same number would inherit them. The same key acquired again
//     while its number is quarantined gets that number back (it means the
//     same thing, so that is safe).
//
// Generations are the caller's: Release takes the generation of the first
// output (Plan) that no longer uses the number, Confirm the newest
// generation known to be applied. Numbers are handed out lowest first.
// A LocalAllocator is not safe for concurrent use (the compiler
// serialises; the DNS proxy must call it through the same owner).
type LocalAllocator struct {
	byKey map[localKey]*localEntry
	byID  map[ID]*localEntry
	free  [2][]ID // confirmed-free numbers per kind, sorted ascending
	next  [2]ID   // lowest number never handed out, per kind
	// acquired: Acquire has been called (Adopt comes before).
	acquired bool
}

type localKey struct {
	kind LocalKind
	key  string
}

type localEntry struct {
	k    localKey
	id   ID
	refs int
	// released is the generation that dropped the number (valid while
	// refs == 0: the entry is in quarantine).
	released uint64
}

// NewLocalAllocator returns an empty allocator.
func NewLocalAllocator() *LocalAllocator {
	a := &LocalAllocator{byKey: map[localKey]*localEntry{}, byID: map[ID]*localEntry{}}
	for _, k := range []LocalKind{LocalCIDR, LocalFQDN} {
		a.next[k], _ = k.bounds()
	}
	return a
}

// Acquire returns key's number and takes a reference on it: the number it
// already has (held or quarantined), else the lowest free one.
func (a *LocalAllocator) Acquire(kind LocalKind, key string) (ID, error) {
	if kind > LocalFQDN {
		return 0, fmt.Errorf("acquire local identity for %q: unknown kind %d", key, kind)
	}
	a.acquired = true
	lk := localKey{kind, key}
	if e := a.byKey[lk]; e != nil {
		e.refs++
		return e.id, nil
	}
	var id ID
	if f := a.free[kind]; len(f) > 0 {
		id, a.free[kind] = f[0], f[1:]
	} else {
		_, last := kind.bounds()
		if a.next[kind] > last {
			return 0, fmt.Errorf("acquire local identity for %s %q: all %s numbers in use or in quarantine", kind, key, kind)
		}
		id = a.next[kind]
		a.next[kind]++
	}
	e := &localEntry{k: lk, id: id, refs: 1}
	a.byKey[lk] = e
	a.byID[id] = e
	return id, nil
}

// Release drops a reference on key's number. When it was the last one the
// number goes into quarantine, stamped with gen: the first generation of
// the caller's output that no longer uses it.
func (a *LocalAllocator) Release(kind LocalKind, key string, gen uint64) error {
	e := a.byKey[localKey{kind, key}]
	if e == nil || e.refs == 0 {
		return fmt.Errorf("release local identity for %s %q: not held", kind, key)
	}
	e.refs--
	if e.refs == 0 {
		e.released = gen
	}
	return nil
}

// Confirm reports that every output up to and including generation gen is
// fully applied (maps synced, proxies ACKed): numbers released at or before
// gen leave quarantine and may go to other keys.
func (a *LocalAllocator) Confirm(gen uint64) {
	var freed [2]bool
	for id, e := range a.byID {
		if e.refs > 0 || e.released > gen {
			continue
		}
		delete(a.byID, id)
		delete(a.byKey, e.k)
		a.free[e.k.kind] = append(a.free[e.k.kind], id)
		freed[e.k.kind] = true
	}
	for k, f := range freed {
		if f {
			s := a.free[k]
			sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		}
	}
}

// Lookup returns the key a number stands for (held or quarantined).
func (a *LocalAllocator) Lookup(id ID) (LocalKind, string, bool) {
	e := a.byID[id]
	if e == nil {
		return 0, "", false
	}
	return e.k.kind, e.k.key, true
}

// Quarantined returns the numbers released but not yet confirmed, sorted.
func (a *LocalAllocator) Quarantined() []ID {
	var out []ID
	for id, e := range a.byID {
		if e.refs == 0 {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Adopt records numbers that earlier maps (an agent restart over pinned
// maps) gave to keys, before any Acquire: a key acquired later gets its
// old number back, and the other adopted numbers stay in quarantine until
// the first Confirm at or after gen, so that no key inherits another's
// entries. Numbers below the highest adopted one that were not adopted are
// free: no map holds them. A number outside its kind's range, a key or
// number adopted twice, or an Adopt after an Acquire is an error.
func (a *LocalAllocator) Adopt(kind LocalKind, key string, id ID, gen uint64) error {
	first, last := kind.bounds()
	if id < first || id > last {
		return fmt.Errorf("adopt local identity %d for %s %q: outside the %s range", id, kind, key, kind)
	}
	lk := localKey{kind, key}
	if e := a.byID[id]; e != nil {
		if e.k == lk {
			return nil
		}
		return fmt.Errorf("adopt local identity %d for %s %q: already adopted for %q", id, kind, key, e.k.key)
	}
	if e := a.byKey[lk]; e != nil {
		return fmt.Errorf("adopt local identity %d for %s %q: already has %d", id, kind, key, e.id)
	}
	if a.acquired {
		return fmt.Errorf("adopt local identity %d for %s %q: adopt before the first Acquire", id, kind, key)
	}
	e := &localEntry{k: lk, id: id, released: gen}
	a.byKey[lk] = e
	a.byID[id] = e
	for n := a.next[kind]; n < id; n++ {
		a.free[kind] = append(a.free[kind], n) // not adopted: free
	}
	if id >= a.next[kind] {
		a.next[kind] = id + 1
	}
	f := a.free[kind][:0]
	for _, n := range a.free[kind] {
		if n != id {
			f = append(f, n)
		}
	}
	a.free[kind] = f
	return nil
}

// Rename gives the number of key from (adopted or released, held by no
// one) to key to, which has none: a restarted DNS proxy's class takes the
// number the pinned maps hold for its addresses. It reports whether it did.
func (a *LocalAllocator) Rename(kind LocalKind, from, to string) bool {
	e := a.byKey[localKey{kind, from}]
	if e == nil || e.refs > 0 || a.byKey[localKey{kind, to}] != nil {
		return false
	}
	delete(a.byKey, e.k)
	e.k = localKey{kind, to}
	a.byKey[e.k] = e
	return true
}
