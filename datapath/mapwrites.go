package datapath

import "sync/atomic"

// mapwrites.go counts the entries Sync writes and deletes, per map, so that
// "an unchanged Plan writes nothing" can be measured (the agent exports it
// as moat_datapath_map_updates_total{map}). The generation bump that ends
// every Sync is not an entry write and is not counted.

// Map names of MapUpdates.
const (
	MapPolicy    = "policy"
	MapIPCache   = "ipcache"
	MapEndpoints = "endpoints"
	MapLocalEP   = "local_ep"
)

type mapWrites struct {
	policy, ipcache, endpoints, local atomic.Uint64
}

// add counts n written or deleted entries of op kind k.
func (w *mapWrites) add(k syncOpKind, n int) {
	switch k {
	case opPutPolicy, opDeletePolicy, opDeleteMisplaced:
		w.policy.Add(uint64(n))
	case opPutIPCache, opDeleteIPCache:
		w.ipcache.Add(uint64(n))
	case opPutEndpoint, opDeleteEndpoint:
		w.endpoints.Add(uint64(n))
	case opPutLocal, opDeleteLocal:
		w.local.Add(uint64(n))
	}
}

// MapUpdates returns how many entries Sync has written or deleted in each
// map since Open (endpoint configs only when they changed).
func (d *Datapath) MapUpdates() map[string]uint64 {
	return map[string]uint64{
		MapPolicy:    d.writes.policy.Load(),
		MapIPCache:   d.writes.ipcache.Load(),
		MapEndpoints: d.writes.endpoints.Load(),
		MapLocalEP:   d.writes.local.Load(),
	}
}
