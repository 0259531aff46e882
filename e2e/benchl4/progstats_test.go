package main

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// TestProgCost: ns/packet is both programs' run time over the packets
// forwarded (from_endpoint runs), since packets delivered from veth to
// veth skip to_endpoint.
func TestProgCost(t *testing.T) {
	ps := &progStats{progs: make([]*ebpf.Program, 2), names: []string{"from_endpoint", "to_endpoint"}}
	before := []progSample{{runtime: time.Microsecond, runs: 5}, {runtime: 0, runs: 0}}
	after := []progSample{{runtime: 11 * time.Microsecond, runs: 105}, {runtime: 5 * time.Microsecond, runs: 10}}
	c := ps.cost(before, after)
	if c.NsPerPacket != 150 {
		t.Errorf("ns/packet %v, want (10 µs + 5 µs) / 100 packets = 150", c.NsPerPacket)
	}
	if c.NsPerRun["from_endpoint"] != 100 || c.NsPerRun["to_endpoint"] != 500 {
		t.Errorf("ns/run %v, want from_endpoint 100, to_endpoint 500", c.NsPerRun)
	}
	if c.Runs["from_endpoint"] != 100 || c.Runs["to_endpoint"] != 10 {
		t.Errorf("runs %v", c.Runs)
	}
	if got := ps.cost(before, before).NsPerPacket; got != 0 {
		t.Errorf("no packets: ns/packet %v, want 0", got)
	}
}
