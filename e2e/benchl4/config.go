package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is one benchmark run.
type Config struct {
	// Duration of each measurement (wrk, iperf3 TCP, iperf3 UDP).
	Duration time.Duration
	// Rules lists the policy sizes N to measure, ascending.
	Rules []int
	// JSONPath, when set, receives the report as JSON.
	JSONPath string
	// WrkThreads and WrkConns configure wrk.
	WrkThreads, WrkConns int
	// PinRoot is the bpffs directory of the bench's own datapath.
	PinRoot string
	// NetnsPrefix names the bench's netns (host: <prefix>host).
	NetnsPrefix string
	// ReplaceRepeats is how many times a policy replacement is timed (the
	// median is reported).
	ReplaceRepeats int
	// Rounds repeats every measurement per size (per workload the
	// scenarios run as a palindrome, a b c c b a, to cancel drift). Rates
	// are reported as medians over the rounds, b/a and c/a as medians of
	// each round's own ratio, with their min–max.
	Rounds int
}

// DefaultConfig is a full run: about ten minutes on 2 vCPUs (a round of one
// size is about 75 s: sixteen 3 s measurements, six 2 s cost runs and
// set-up; 2 sizes × 4 rounds).
func DefaultConfig() Config {
	return Config{
		Duration:       3 * time.Second,
		Rules:          []int{1000, 10000},
		WrkThreads:     2,
		WrkConns:       32,
		PinRoot:        "/sys/fs/bpf/moat-bench",
		NetnsPrefix:    "mbench-",
		ReplaceRepeats: 5,
		Rounds:         4,
	}
}

// Quick shrinks a run to seconds, for the smoke test: every row is still
// measured, just briefly.
func (c Config) Quick() Config {
	c.Duration = time.Second
	c.Rules = []int{100, 1000}
	c.ReplaceRepeats = 1
	c.Rounds = 1
	return c
}

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Duration < time.Second || c.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("duration %v: want 1s to 10m (iperf3 measures whole seconds)", c.Duration))
	}
	if len(c.Rules) == 0 {
		errs = append(errs, errors.New("rules: want at least one size"))
	}
	for _, n := range c.Rules {
		if n < len(allowedRules()) || n > 60000 {
			errs = append(errs, fmt.Errorf("rules %d: want %d to 60000 (the policy map holds 65536 entries)", n, len(allowedRules())))
		}
	}
	if !slices.IsSorted(c.Rules) {
		errs = append(errs, fmt.Errorf("rules %v: want ascending sizes", c.Rules))
	}
	if c.WrkThreads < 1 || c.WrkConns < c.WrkThreads {
		errs = append(errs, fmt.Errorf("wrk threads %d, connections %d: want threads >= 1 and connections >= threads", c.WrkThreads, c.WrkConns))
	}
	if !filepath.IsAbs(c.PinRoot) || !strings.HasPrefix(filepath.Clean(c.PinRoot), "/sys/fs/bpf/") {
		errs = append(errs, fmt.Errorf("pin root %q: want a directory below /sys/fs/bpf", c.PinRoot))
	}
	if c.NetnsPrefix == "" {
		errs = append(errs, errors.New("netns prefix: must not be empty"))
	}
	if c.ReplaceRepeats < 1 {
		errs = append(errs, fmt.Errorf("replace repeats %d: want at least 1", c.ReplaceRepeats))
	}
	if c.Rounds < 1 || c.Rounds > 20 {
		errs = append(errs, fmt.Errorf("rounds %d: want 1 to 20", c.Rounds))
	}
	return errors.Join(errs...)
}

// ParseRules parses a comma-separated list of rule counts.
func ParseRules(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil {
			return nil, fmt.Errorf("parse rules %q: %w", f, err)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("parse rules %q: empty list", s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
