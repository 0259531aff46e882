package agent

import (
	"cmp"
	"net/netip"
	"slices"
)

// adoptLocalIdentities gives the compiler, before its first Plan, the
// node-local identity numbers that the pinned maps hold for CIDR prefixes
// and learned DNS addresses (an earlier agent's), so that a restart keeps
// every prefix's number:
// the first Sync then changes no ipcache or policy entry for them, tracked
// flows keep their verdicts, and proxies see no new numbers. A number the
// compiler cannot adopt (out of the CIDR range, or held for two prefixes)
// is logged and left out: that prefix gets a fresh number, as it would
// have without adoption.
func (a *Agent) adoptLocalIdentities() {
	locals := a.maps.LocalIdentities()
	pfs := make([]netip.Prefix, 0, len(locals))
	for pf := range locals {
		pfs = append(pfs, pf)
	}
	slices.SortFunc(pfs, func(x, y netip.Prefix) int { // the log is the same on every run
		return cmp.Or(cmp.Compare(locals[x], locals[y]), x.Compare(y))
	})
	adopted := 0
	for _, pf := range pfs {
		if err := a.compiler.AdoptLocal(pf, locals[pf]); err != nil {
			a.log.Warn("pinned local identity not adopted: its prefix gets a new number", "prefix", pf, "err", err)
			continue
		}
		adopted++
	}
	if len(pfs) > 0 {
		a.log.Info("adopted the pinned maps' local identities", "adopted", adopted, "pinned", len(pfs))
	}
}
