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

// EndpointCounters returns the counters of the endpoint on ifindex.
func (d *Datapath) EndpointCounters(ifindex int, dir policy.Direction) (Counters, error) {
	k := moatEpStatsKey{Endpoint: uint32(ifindex), Direction: uint32(dir)}
	var per []moatEpStats
	if err := d.objs.MoatEpStats.Lookup(&k, &per); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Counters{}, nil
		}
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

// RuleCounters returns the per-rule counters by rule index (see Rule).
func (d *Datapath) RuleCounters() (map[uint32]RuleCounter, error) {
	out := map[uint32]RuleCounter{}
	var idx uint32
	var per []moatRuleStats
	it := d.objs.MoatRuleStats.Iterate()
	for it.Next(&idx, &per) {
		var c RuleCounter
		for _, s := range per {
			c.Packets += s.Packets
			c.Bytes += s.Bytes
		}
		out[idx] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read rule counters: %w", err)
	}
	return out, nil
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
