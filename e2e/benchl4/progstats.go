package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// progStats reads the run-time statistics of the programs attached through
// the bench's pinned links (from_endpoint and to_endpoint).
type progStats struct {
	progs   []*ebpf.Program
	names   []string
	enabled io.Closer
}

// ProgCost is the programs' cost over one measurement.
type ProgCost struct {
	// Runs per program name, and nanoseconds per run.
	Runs     map[string]uint64  `json:"runs"`
	NsPerRun map[string]float64 `json:"nsPerRun"`
	// NsPerPacket is the programs' total run time per forwarded packet.
	// Every packet passes one from_endpoint run (tc ingress of the sender's
	// host veth); it passes to_endpoint (tc egress of the receiver's host
	// veth) only when it takes the routed path: a tracked flow's packets
	// go from veth to veth (local delivery). So the sum of both programs'
	// run time is divided by from_endpoint's runs.
	NsPerPacket float64 `json:"nsPerPacket"`
}

type progSample struct {
	runtime time.Duration
	runs    uint64
}

// openProgStats turns on BPF run-time statistics (kernel.bpf_stats_enabled,
// held through BPF_ENABLE_STATS so that the kernel switches it off again
// when the bench exits, even if it crashes) and finds the programs behind
// the links pinned under pinRoot.
func openProgStats(pinRoot string) (*progStats, error) {
	en, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable bpf run-time stats: %w", err)
	}
	ps := &progStats{enabled: en}
	dir := filepath.Join(pinRoot, "links")
	entries, err := os.ReadDir(dir)
	if err != nil {
		ps.Close()
		return nil, fmt.Errorf("read pinned links: %w", err)
	}
	var ids []ebpf.ProgramID
	for _, ent := range entries {
		l, err := link.LoadPinnedLink(filepath.Join(dir, ent.Name()), nil)
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("load pinned link %s: %w", ent.Name(), err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("read link info %s: %w", ent.Name(), err)
		}
		if !slices.Contains(ids, info.Program) {
			ids = append(ids, info.Program)
		}
	}
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			ps.Close()
			return nil, fmt.Errorf("open program %d: %w", id, err)
		}
		name := fmt.Sprintf("prog-%d", id)
		if info, err := p.Info(); err == nil && info.Name != "" {
			name = info.Name
		}
		ps.progs = append(ps.progs, p)
		ps.names = append(ps.names, name)
	}
	if len(ps.progs) == 0 {
		ps.Close()
		return nil, fmt.Errorf("find attached programs: no pinned links under %s", dir)
	}
	return ps, nil
}

func (ps *progStats) sample() ([]progSample, error) {
	out := make([]progSample, len(ps.progs))
	for i, p := range ps.progs {
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("read stats of program %s: %w", ps.names[i], err)
		}
		out[i] = progSample{runtime: st.Runtime, runs: st.RunCount}
	}
	return out, nil
}

// cost computes the cost between two samples.
func (ps *progStats) cost(before, after []progSample) ProgCost {
	c := ProgCost{Runs: map[string]uint64{}, NsPerRun: map[string]float64{}}
	var total time.Duration
	for i := range ps.progs {
		runs := after[i].runs - before[i].runs
		c.Runs[ps.names[i]] = runs
		total += after[i].runtime - before[i].runtime
		if runs == 0 {
			continue
		}
		c.NsPerRun[ps.names[i]] = float64(after[i].runtime-before[i].runtime) / float64(runs)
	}
	if packets := c.Runs["from_endpoint"]; packets > 0 {
		c.NsPerPacket = float64(total) / float64(packets)
	}
	return c
}

// Close releases the programs and switches statistics off.
func (ps *progStats) Close() error {
	var errs []error
	for _, p := range ps.progs {
		errs = append(errs, p.Close())
	}
	if ps.enabled != nil {
		errs = append(errs, ps.enabled.Close())
	}
	return errors.Join(errs...)
}
