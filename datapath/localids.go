package datapath

import (
	"net/netip"

	"github.com/moatnet/moat/policy"
)

// LocalIdentities returns the ipcache entries that carry a node-local
// identity (CIDR prefixes, policy.IDLocalFlag set), as the maps held them
// at Open or as the last Sync wrote them. After a restart over pinned maps
// the agent hands them to the compiler (Compiler.AdoptLocalCIDR) before
// its first Plan, so that every prefix keeps its number.
func (d *Datapath) LocalIdentities() map[netip.Prefix]policy.ID {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[netip.Prefix]policy.ID{}
	for p, id := range d.state.ipcache {
		if id.IsLocal() {
			out[p] = id
		}
	}
	return out
}
