package datapath

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// ipcachepatch.go writes host entries of the ipcache outside a Sync: the
// DNS proxy's learned addresses that join a class identity the maps already
// hold with its policy entries (policy.Compiler.LearnedDelta decides that).
// One entry per address, in place of a Sync that would diff every map.

// PatchIPCache writes d's host entries and deletes its host prefixes,
// records them as Sync does (so the next Sync diffs against them), and
// publishes a new generation, so tracked flows to those addresses are
// checked again as after a Sync. Every prefix must be a host prefix (/32,
// /128) and every identity in Put must be in the maps already: the caller's
// contract, which PatchIPCache cannot see.
func (d *Datapath) PatchIPCache(delta policy.IPCacheDelta) (err error) {
	if delta.Empty() {
		return nil
	}
	var put, del ipcacheBatch
	want := make(map[netip.Prefix]policy.ID, len(delta.Put))
	for _, e := range delta.Put {
		p := e.Prefix.Masked()
		if !isHostPrefix(p) {
			return fmt.Errorf("patch ipcache: %s is not a host prefix", e.Prefix)
		}
		want[p] = e.Identity
		put.add(p, e.Identity)
	}
	for _, p := range delta.Delete {
		p = p.Masked()
		if !isHostPrefix(p) {
			return fmt.Errorf("patch ipcache: %s is not a host prefix", p)
		}
		del.add(p, 0)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		if gerr := d.bumpGeneration(); gerr != nil {
			err = errors.Join(err, gerr)
		}
	}()
	if err := put.put(&d.objs, &d.state, want); err != nil {
		return fmt.Errorf("patch ipcache: write: %w", err)
	}
	d.writes.add(opPutIPCache, len(put.hostKeys))
	if err := del.delete(&d.objs, &d.state); err != nil {
		return fmt.Errorf("patch ipcache: delete: %w", err)
	}
	d.writes.add(opDeleteIPCache, len(del.hostKeys))
	return nil
}
