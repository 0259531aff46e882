package datapath

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ConntrackStats describes the connection-tracking map (moat_ct) as one
// sweep found it. The programs never delete an entry when its flow ends:
// an expired entry stays until the LRU evicts it for a new flow, so the map
// fills up on any busy node, and Entries says little. Live is what matters:
// when live flows approach Capacity, the LRU starts evicting them, and a
// flow that loses its entry has its packets decided one by one (replies
// into a default-deny direction are then dropped).
type ConntrackStats struct {
	Capacity int // max_entries
	Entries  int // entries in the map, expired ones included
	Live     int // entries whose flow has not expired
	// Live entries by protocol (ICMP counts ICMPv6 too).
	LiveTCP, LiveUDP, LiveICMP, LiveOther int
	// LiveClosing counts the live TCP entries after a FIN or RST.
	LiveClosing int
	Took        time.Duration // the sweep's duration
}

// Pressure is Live / Capacity.
func (s ConntrackStats) Pressure() float64 {
	if s.Capacity == 0 {
		return 0
	}
	return float64(s.Live) / float64(s.Capacity)
}

// ctFlagClosing is CT_F_CLOSING of bpf/moat.h.
const ctFlagClosing = 1 << 1

// ctNow is the programs' CT clock (ct_now in bpf/ct.h): the coarse
// monotonic clock in ticks of 2^30 ns.
func ctNow() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		return 0, fmt.Errorf("read the coarse monotonic clock: %w", err)
	}
	return uint64(ts.Nano()) >> ctTickShift, nil
}

// ctSweepBatch is how many entries one batch lookup returns.
const ctSweepBatch = 4096

// ConntrackStats sweeps the connection-tracking map with batch lookups
// (64 syscalls for a full map of 262,144 entries). It reads only; the map
// is not locked, so entries that come and go during the sweep may or may
// not be counted. It sweeps a duplicate of the map's descriptor, outside
// the Datapath's lock, so Sync is never kept waiting and Close may run.
func (d *Datapath) ConntrackStats() (ConntrackStats, error) {
	start := time.Now()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ConntrackStats{}, errors.New("sweep moat_ct: datapath closed")
	}
	m, err := d.objs.MoatCt.Clone()
	d.mu.Unlock()
	if err != nil {
		return ConntrackStats{}, fmt.Errorf("sweep moat_ct: %w", err)
	}
	defer m.Close()
	st := ConntrackStats{Capacity: int(m.MaxEntries())}
	now, err := ctNow()
	if err != nil {
		return st, err
	}
	keys := make([]moatCtKey, ctSweepBatch)
	vals := make([]moatCtEntry, ctSweepBatch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			st.Entries++
			v := &vals[i]
			if v.Expires < now {
				continue
			}
			st.Live++
			switch keys[i].Proto {
			case unix.IPPROTO_TCP:
				st.LiveTCP++
				if v.Flags&ctFlagClosing != 0 {
					st.LiveClosing++
				}
			case unix.IPPROTO_UDP:
				st.LiveUDP++
			case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
				st.LiveICMP++
			default:
				st.LiveOther++
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("sweep moat_ct: %w", err)
		}
	}
	st.Took = time.Since(start)
	return st, nil
}
