package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// maxPrefilterSlot is the highest counter slot (moat_pf_stats holds the
// total in slot 0 and one slot per prefix).
const maxPrefilterSlot = 65536

// denyListPlan is what SetDenyList writes: prefixes to add with their
// counter slots, and prefixes to delete.
type denyListPlan struct {
	add map[netip.Prefix]uint32
	del []netip.Prefix
}

// normalizePrefix masks p and turns IPv4-mapped IPv6 prefixes of at least
// 96 bits into IPv4 ones, so each CIDR has one form.
func normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("invalid prefix %v", p)
	}
	a, bits := p.Addr().WithZone(""), p.Bits()
	if a.Is4In6() && bits >= ipcacheV4Offset {
		a, bits = a.Unmap(), bits-ipcacheV4Offset
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// planDenyList compares the installed prefixes (with their slots) with the
// desired list. New prefixes get the lowest slots that no installed prefix
// holds, so a slot being removed is never shared with a new prefix within
// one sync.
func planDenyList(current map[netip.Prefix]uint32, desired []netip.Prefix) (denyListPlan, error) {
	want := map[netip.Prefix]bool{}
	for _, p := range desired {
		n, err := normalizePrefix(p)
		if err != nil {
			return denyListPlan{}, fmt.Errorf("plan deny list: %w", err)
		}
		want[n] = true
	}
	plan := denyListPlan{add: map[netip.Prefix]uint32{}}
	used := map[uint32]bool{}
	for p, slot := range current {
		used[slot] = true
		if !want[p] {
			plan.del = append(plan.del, p)
		}
	}
	var adds []netip.Prefix
	for p := range want {
		if _, ok := current[p]; !ok {
			adds = append(adds, p)
		}
	}
	slices.SortFunc(adds, comparePrefix)
	slices.SortFunc(plan.del, comparePrefix)
	next := uint32(1)
	for _, p := range adds {
		for used[next] {
			next++
		}
		if next > maxPrefilterSlot {
			return denyListPlan{}, fmt.Errorf("plan deny list: more than %d prefixes", maxPrefilterSlot)
		}
		plan.add[p] = next
		used[next] = true
	}
	return plan, nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func prefilterKeyOf(p netip.Prefix) prefilterPrefilterKey {
	return prefilterPrefilterKey(ipcacheKey(p))
}

func prefilterPrefixOf(k prefilterPrefilterKey) (netip.Prefix, error) {
	return ipcachePrefixFromBPF(moatIpcacheKey(k))
}

// installed reads the deny list from moat_prefilter.
func (p *Prefilter) installed() (map[netip.Prefix]uint32, error) {
	out := map[netip.Prefix]uint32{}
	var k prefilterPrefilterKey
	var v prefilterPrefilterVal
	it := p.objs.MoatPrefilter.Iterate()
	for it.Next(&k, &v) {
		pfx, err := prefilterPrefixOf(k)
		if err != nil {
			return nil, err
		}
		out[pfx] = v.Slot
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read deny list: %w", err)
	}
	return out, nil
}

// SetDenyList makes the deny list equal to prefixes (IPv4 and IPv6 CIDRs;
// duplicates and host bits are ignored), writing only the difference:
// additions first, then deletions with their counters.
func (p *Prefilter) SetDenyList(prefixes []netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.installed()
	if err != nil {
		return err
	}
	plan, err := planDenyList(cur, prefixes)
	if err != nil {
		return err
	}
	adds := make([]netip.Prefix, 0, len(plan.add))
	for pfx := range plan.add {
		adds = append(adds, pfx)
	}
	slices.SortFunc(adds, comparePrefix)
	for _, pfx := range adds {
		slot := plan.add[pfx]
		// A stale counter from an interrupted sync must not carry over.
		if err := p.objs.MoatPfStats.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("reset prefilter counter slot %d: %w", slot, err)
		}
		k := prefilterKeyOf(pfx)
		if err := p.objs.MoatPrefilter.Put(&k, prefilterPrefilterVal{Slot: slot}); err != nil {
			return fmt.Errorf("add %s to deny list: %w", pfx, err)
		}
	}
	for _, pfx := range plan.del {
		k := prefilterKeyOf(pfx)
		if err := p.objs.MoatPrefilter.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove %s from deny list: %w", pfx, err)
		}
		if err := p.objs.MoatPfStats.Delete(cur[pfx]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove counters of %s: %w", pfx, err)
		}
	}
	return nil
}

// DenyList returns the installed deny list, sorted.
func (p *Prefilter) DenyList() ([]netip.Prefix, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.installed()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(cur))
	for pfx := range cur {
		out = append(out, pfx)
	}
	slices.SortFunc(out, comparePrefix)
	return out, nil
}

// PrefilterCounter counts dropped packets and bytes, summed over CPUs.
type PrefilterCounter struct {
	Packets, Bytes uint64
}

// PrefilterCounters are the prefilter's drop counters: in total and per
// installed prefix (prefixes without drops are present with zero).
type PrefilterCounters struct {
	Total     PrefilterCounter
	PerPrefix map[netip.Prefix]PrefilterCounter
}

// Counters returns the drop counters.
func (p *Prefilter) Counters() (PrefilterCounters, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, err := p.installed()
	if err != nil {
		return PrefilterCounters{}, err
	}
	out := PrefilterCounters{PerPrefix: make(map[netip.Prefix]PrefilterCounter, len(cur))}
	if out.Total, err = p.counter(0); err != nil {
		return PrefilterCounters{}, err
	}
	for pfx, slot := range cur {
		c, err := p.counter(slot)
		if err != nil {
			return PrefilterCounters{}, err
		}
		out.PerPrefix[pfx] = c
	}
	return out, nil
}

func (p *Prefilter) counter(slot uint32) (PrefilterCounter, error) {
	var per []prefilterPrefilterStats
	if err := p.objs.MoatPfStats.Lookup(slot, &per); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return PrefilterCounter{}, nil
		}
		return PrefilterCounter{}, fmt.Errorf("read prefilter counter slot %d: %w", slot, err)
	}
	var c PrefilterCounter
	for _, s := range per {
		c.Packets += s.Packets
		c.Bytes += s.Bytes
	}
	return c, nil
}
