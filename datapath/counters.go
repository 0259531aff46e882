package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/moatnet/moat/policy"
)

// Counters are an endpoint's packet counters in one direction, summed over
// CPUs. The direction is the hook's: Egress counts packets leaving the pod
// (including replies to ingress flows), Ingress packets entering it.
type Counters struct {
	AllowedPackets, AllowedBytes       uint64
	DroppedPackets, DroppedBytes       uint64
	RedirectedPackets, RedirectedBytes uint64
}

// EndpointCounters returns the counters of the endpoint on ifindex; an
// interface that is not an endpoint (any more) has none.
func (d *Datapath) EndpointCounters(ifindex int, dir policy.Direction) (Counters, error) {
	d.mu.Lock()
	cfg, ok := d.state.endpoints[uint32(ifindex)]
	d.mu.Unlock()
	if !ok || cfg.Slot == 0 {
		return Counters{}, nil
	}
	var per []moatEpStats
	if err := d.objs.MoatEpStats.Lookup(epStatsIndex(cfg.Slot, uint32(dir)), &per); err != nil {
		return Counters{}, fmt.Errorf("read endpoint counters of ifindex %d: %w", ifindex, err)
	}
	var c Counters
	for _, s := range per {
		c.AllowedPackets += s.AllowedPackets
		c.AllowedBytes += s.AllowedBytes
		c.DroppedPackets += s.DroppedPackets
		c.DroppedBytes += s.DroppedBytes
		c.RedirectedPackets += s.RedirectedPackets
		c.RedirectedBytes += s.RedirectedBytes
	}
	return c, nil
}

// RuleCounter counts the packets of the flows a rule decided.
type RuleCounter struct {
	Packets, Bytes uint64
}

// RuleCounters returns the per-rule counters by rule index (see Rule) of
// the current rules that have seen traffic.
func (d *Datapath) RuleCounters() (map[uint32]RuleCounter, error) {
	d.mu.Lock()
	live := make(map[uint32]bool, len(d.state.rules))
	var last uint32
	for _, idx := range d.state.rules {
		live[idx] = true
		last = max(last, idx)
	}
	d.mu.Unlock()
	out := map[uint32]RuleCounter{}
	if last == 0 {
		return out, nil
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("read rule counters: %w", err)
	}
	// The array up to the highest index in use, a chunk per syscall.
	keys := make([]uint32, min(int(last)+1, batchChunk))
	vals := make([]moatRuleStats, len(keys)*ncpu)
	add := func(idx uint32, per []moatRuleStats) {
		if !live[idx] {
			return
		}
		var c RuleCounter
		for _, s := range per {
			c.Packets += s.Packets
			c.Bytes += s.Bytes
		}
		if c.Packets > 0 {
			out[idx] = c
		}
	}
	var cursor ebpf.MapBatchCursor
	for read := 0; read <= int(last); {
		n, err := d.objs.MoatRuleStats.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			add(keys[i], vals[i*ncpu:(i+1)*ncpu])
		}
		read += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break // the end of the array
		}
		if errors.Is(err, ebpf.ErrNotSupported) && n == 0 {
			if err := d.ruleCountersEach(live, add); err != nil {
				return nil, err
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rule counters: %w", err)
		}
	}
	return out, nil
}

// ruleCountersEach is RuleCounters without batch operations.
func (d *Datapath) ruleCountersEach(live map[uint32]bool, add func(uint32, []moatRuleStats)) error {
	var per []moatRuleStats
	for idx := range live {
		if err := d.objs.MoatRuleStats.Lookup(idx, &per); err != nil {
			return fmt.Errorf("read rule counters of rule %d: %w", idx, err)
		}
		add(idx, per)
	}
	return nil
}

// EventStats counts events emitted and suppressed, summed over CPUs.
type EventStats struct {
	Emitted, RateLimited, RingbufFull uint64
}

// EventStats returns the event counters.
func (d *Datapath) EventStats() (EventStats, error) {
	var per []moatEventStats
	zero := uint32(0)
	if err := d.objs.MoatEvStats.Lookup(&zero, &per); err != nil {
		return EventStats{}, fmt.Errorf("read event stats: %w", err)
	}
	var s EventStats
	for _, p := range per {
		s.Emitted += p.Emitted
		s.RateLimited += p.RateLimited
		s.RingbufFull += p.RingbufFull
	}
	return s, nil
}
