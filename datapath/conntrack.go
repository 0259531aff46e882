package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ConntrackStats describes the connection-tracking map (moat_ct) as one
// sweep found it. The programs never delete an entry when its flow ends:
// without ConntrackGC an expired entry stays until the LRU evicts it for a
// new flow, so the map fills up on any busy node and Entries says little.
// Live is what matters: when live flows approach Capacity, the LRU evicts
// them, and a flow that lost its entry has its packets decided one by one
// (replies into a default-deny direction are then dropped).
type ConntrackStats struct {
	Capacity int // max_entries
	Entries  int // entries the sweep met, expired ones included
	Live     int // entries whose flow has not expired
	// Live entries by protocol (ICMP counts ICMPv6 too).
	LiveTCP, LiveUDP, LiveICMP, LiveOther int
	// LiveClosing counts the live TCP entries after a FIN or RST.
	LiveClosing int
	// Removed counts the expired entries ConntrackGC deleted.
	Removed int
	Took    time.Duration // the sweep's duration
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

// ConntrackStats counts the entries of the connection-tracking map without
// changing it.
func (d *Datapath) ConntrackStats() (ConntrackStats, error) { return d.sweepCT(false, nil) }

// ConntrackGC deletes the expired entries of the connection-tracking map
// and counts the rest, in one sweep. The LRU map would otherwise make room
// for new flows by evicting the entries least recently used, which may be
// those of long idle flows that are still live, while flows that closed a
// moment ago and expired since stay.
//
// An entry is deleted right after the batch that read it (a few hundred
// microseconds later). A new flow of the same tuple that replaces an
// expired entry in that window loses its entry, as it would to an LRU
// eviction; connection-tracking collectors that read before they delete
// share this window.
func (d *Datapath) ConntrackGC() (ConntrackStats, error) { return d.sweepCT(true, nil) }

// ConntrackAddrs returns the addresses of addrs that a flow the
// connection-tracking map holds (not expired, and for TCP not closing) has
// at either end: the DNS proxy's learned addresses that a live connection
// uses, which must not leave the ipcache. One sweep, like ConntrackStats.
func (d *Datapath) ConntrackAddrs(addrs map[netip.Addr]struct{}) (map[netip.Addr]struct{}, error) {
	used := map[netip.Addr]struct{}{}
	if len(addrs) == 0 {
		return used, nil
	}
	_, err := d.sweepCT(false, func(k *moatCtKey, v *moatCtEntry) {
		if v.Flags&ctFlagClosing != 0 {
			return
		}
		for _, b := range [][16]byte{k.Daddr, k.Saddr} {
			a := netip.AddrFrom16(b).Unmap()
			if _, ok := addrs[a]; ok {
				used[a] = struct{}{}
			}
		}
	})
	return used, err
}

// sweepCT walks moat_ct with batch lookups: 64 syscalls and about 0.1 s of
// CPU for a full map of 262,144 entries, each syscall short, so nothing
// waits on it for long. Entries that come and go during the sweep may or
// may not be counted. It works on a duplicate of the map's descriptor,
// outside the Datapath's lock, so Sync is never kept waiting and Close may
// run meanwhile.
// live, when set, sees the key of every entry not expired.
func (d *Datapath) sweepCT(remove bool, live func(*moatCtKey, *moatCtEntry)) (ConntrackStats, error) {
	what := "sweep moat_ct"
	if remove {
		what = "collect moat_ct's expired entries"
	}
	start := time.Now()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ConntrackStats{}, fmt.Errorf("%s: datapath closed", what)
	}
	m, err := d.objs.MoatCt.Clone()
	d.mu.Unlock()
	if err != nil {
		return ConntrackStats{}, fmt.Errorf("%s: %w", what, err)
	}
	defer m.Close()
	st := ConntrackStats{Capacity: int(m.MaxEntries())}
	now, err := ctNow()
	if err != nil {
		return st, fmt.Errorf("%s: %w", what, err)
	}
	keys := make([]moatCtKey, ctSweepBatch)
	vals := make([]moatCtEntry, ctSweepBatch)
	var expired []moatCtKey
	var cursor ebpf.MapBatchCursor
	for {
		n, lerr := m.BatchLookup(&cursor, keys, vals, nil)
		expired = expired[:0]
		for i := range n {
			st.Entries++
			v := &vals[i]
			if v.Expires < now {
				expired = append(expired, keys[i])
				continue
			}
			st.Live++
			if live != nil {
				live(&keys[i], v)
			}
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
		if remove && len(expired) > 0 {
			removed, derr := deleteKeys(m, expired)
			st.Removed += removed
			if derr != nil {
				return st, fmt.Errorf("%s: %w", what, derr)
			}
		}
		if errors.Is(lerr, ebpf.ErrKeyNotExist) {
			break
		}
		if lerr != nil {
			return st, fmt.Errorf("%s: %w", what, lerr)
		}
	}
	st.Took = time.Since(start)
	return st, nil
}

// deleteKeys deletes keys from m in batches. A key that is gone already
// (evicted, or deleted by a policy change) is skipped; the kernel stops a
// batch there, so the rest is sent again.
func deleteKeys(m *ebpf.Map, keys []moatCtKey) (int, error) {
	removed := 0
	for len(keys) > 0 {
		n, err := m.BatchDelete(keys, nil)
		removed += n
		switch {
		case err == nil:
			return removed, nil
		case errors.Is(err, ebpf.ErrKeyNotExist) && n < len(keys):
			keys = keys[n+1:]
		default:
			return removed, fmt.Errorf("delete %d expired entries: %w", len(keys), err)
		}
	}
	return removed, nil
}
