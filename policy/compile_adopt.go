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

// AdoptLocal is AdoptLocalCIDR for every pinned ipcache entry with a local
// identity: a host entry with a number of the FQDN range is an address the
// DNS proxy learned (AdoptLearned), anything else a policy prefix.
func (c *Compiler) AdoptLocal(pf netip.Prefix, id ID) error {
	if first, last := LocalFQDN.bounds(); id >= first && id <= last && pf.IsSingleIP() {
		return c.AdoptLearned(pf.Addr(), id)
	}
	return c.AdoptLocalCIDR(pf, id)
}

// AdoptLearned records that the pinned maps give learned address ip the
// class identity id. The number is held back (quarantined, as adopted
// CIDR numbers are) and, when the address is learned again before the
// first Plan (the DNS proxy restores its cache), the class it joins at
// that Plan takes the number back, so the maps keep their entries.
func (c *Compiler) AdoptLearned(ip netip.Addr, id ID) error {
	if err := c.localAlloc.Adopt(LocalFQDN, pinnedKey(id), id, c.gen); err != nil {
		return err
	}
	s := c.learned()
	if s.hints == nil {
		s.hints = map[netip.Addr]ID{}
	}
	s.hints[ip.Unmap()] = id
	return nil
}

func pinnedKey(id ID) string { return fmt.Sprintf("pinned:%d", id) }
