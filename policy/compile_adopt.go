package policy

import (
	"fmt"
	"net/netip"
)

// AdoptLocalCIDR records that maps written by an earlier agent (pinned
// maps that outlived a restart) gave prefix pf the local identity id, so
// that the first Plan gives pf the same number again: the maps then keep
// their entries and tracked flows their verdicts, and proxies see no new
// numbers. Adopted numbers whose prefix no policy uses any more stay in
// quarantine until the first Plan is confirmed applied (ConfirmApplied),
// so that no other prefix inherits their entries. It must be called before
// the first Plan; see LocalAllocator.Adopt for the errors.
func (c *Compiler) AdoptLocalCIDR(pf netip.Prefix, id ID) error {
	if !pf.IsValid() {
		return fmt.Errorf("adopt local identity %d: invalid prefix", id)
	}
	return c.localAlloc.Adopt(LocalCIDR, pf.Masked().String(), id, c.gen)
}
