package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Counter slots. The programs count into per-CPU arrays (an array element
// is an inlined address computation, a per-CPU hash lookup is not): an
// endpoint at epStatsIndex(slot, direction), where the slot is stored in its
// endpoint config and in its CT entries, and a rule at its rule index. Sync
// hands out the lowest free slot or index and zeroes its counters before
// any program can see it, so a reused number starts from zero.
const (
	epSlots   = 4096  // EP_SLOTS in bpf/moat.h: slots 1..epSlots
	ruleSlots = 65536 // RULE_SLOTS: rule indices 1..ruleSlots-1
)

// epStatsIndex is EP_STATS_INDEX of bpf/moat.h.
func epStatsIndex(slot uint32, dir uint32) uint32 { return slot*2 + dir }

// lowestFree hands out the lowest numbers in [1, limit] that used does not
// hold, in increasing order, marking each used.
type lowestFree struct {
	used  map[uint32]bool
	next  uint32
	limit uint32
}

func newLowestFree(limit uint32) *lowestFree {
	return &lowestFree{used: map[uint32]bool{}, next: 1, limit: limit}
}

func (a *lowestFree) take() (uint32, bool) {
	for ; a.next <= a.limit; a.next++ {
		if !a.used[a.next] {
			a.used[a.next] = true
			return a.next, true
		}
	}
	return 0, false
}

// zeroCounters resets the per-CPU array elements at idxs (one batch syscall
// per chunk where the kernel has them).
func zeroCounters[V any](m *ebpf.Map, idxs []uint32) error {
	if len(idxs) == 0 {
		return nil
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("zero %s counters: %w", m, err)
	}
	zeros := make([]V, min(len(idxs), batchChunk)*ncpu)
	for done := 0; done < len(idxs); {
		end := min(done+batchChunk, len(idxs))
		n, err := m.BatchUpdate(idxs[done:end], zeros[:(end-done)*ncpu], nil)
		if err != nil && n == 0 {
			// No batch operations: one element at a time.
			for _, idx := range idxs[done:] {
				if err := m.Put(idx, zeros[:ncpu]); err != nil {
					return fmt.Errorf("zero %s counters at %d: %w", m, idx, err)
				}
			}
			return nil
		}
		done += n
		if err != nil {
			return fmt.Errorf("zero %s counters: %w", m, err)
		}
	}
	return nil
}
