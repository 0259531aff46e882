package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/moatnet/moat/policy"
)

// Run performs one benchmark run. It returns the report of what was
// measured even when a later step fails, and always cleans up.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (rep *Report, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep = &Report{
		Started:  time.Now(),
		Host:     hostSummary(),
		Iptables: iptablesVersion(ctx),
		Duration: cfg.Duration.String(),
		Rounds:   cfg.Rounds,
		Wrk:      fmt.Sprintf("%d threads, %d connections, Connection: close", cfg.WrkThreads, cfg.WrkConns),
		Notes:    standardNotes(),
	}
	defer rep.Finish(cfg.Rules)
	e, err := setup(ctx, cfg, log)
	if err != nil {
		return rep, err
	}
	defer func() {
		if terr := e.teardown(); terr != nil {
			err = errors.Join(err, fmt.Errorf("clean up: %w", terr))
		}
	}()
	for _, n := range cfg.Rules {
		sr, err := e.measureSize(ctx, n)
		rep.Sizes = append(rep.Sizes, sr)
		if err != nil {
			if ctx.Err() != nil {
				return rep, fmt.Errorf("interrupted while measuring %d rules: %w", n, context.Cause(ctx))
			}
			return rep, fmt.Errorf("measure %d rules: %w", n, err)
		}
	}
	return rep, nil
}

// measureSize measures n rules, Rounds times. Within a round each workload
// runs in a palindrome of its scenarios, a b c c b a (c is left out for
// UDP), and each scenario's two runs are averaged: a drift that is linear
// over the round then weighs on every scenario alike, and each ratio
// compares measurements seconds apart. Then the policy replacement is
// timed. Rounds merge into medians (of each round's own ratios for b/a and
// c/a).
func (e *env) measureSize(ctx context.Context, n int) (SizeResult, error) {
	rules, err := RuleSet(n, 0)
	if err != nil {
		return SizeResult{Rules: n}, err
	}
	alt, err := RuleSet(n, replaceShift)
	if err != nil {
		return SizeResult{Rules: n}, err
	}
	var rounds []SizeResult
	for r := range e.cfg.Rounds {
		cur := newSizeResult(n)
		for _, wl := range []string{"http", "tcp", "udp"} {
			order := []string{"a", "b", "c"}
			if wl == "udp" {
				order = order[:2] // 64-byte UDP compares a and b only
			}
			runs := newSizeResult(n)
			for _, sc := range palindrome(order) {
				e.log.Info("measuring", "rules", n, "round", r+1, "workload", wl, "scenario", scenarioNames[sc])
				one := newSizeResult(n)
				if err := e.measureOne(ctx, sc, wl, &one, rules); err != nil {
					return MergeRounds(n, append(rounds, cur)), fmt.Errorf("%s in scenario %s (%s), round %d: %w", wl, sc, scenarioNames[sc], r+1, err)
				}
				runs.addRun(one)
			}
			cur.addMean(runs, 2)
		}
		if err := e.timeReplace(&cur, rules, alt); err != nil {
			return MergeRounds(n, append(rounds, cur)), fmt.Errorf("round %d: %w", r+1, err)
		}
		rounds = append(rounds, cur)
	}
	return MergeRounds(n, rounds), nil
}

// palindrome returns s followed by s reversed: a b c → a b c c b a.
func palindrome(s []string) []string {
	out := slices.Clone(s)
	for i := len(s) - 1; i >= 0; i-- {
		out = append(out, s[i])
	}
	return out
}

var scenarioNames = map[string]string{"a": "no policy", "b": "moat", "c": "iptables"}

// measureOne sets scenario sc up, checks that it enforces what it should,
// runs workload wl and takes the scenario down again.
func (e *env) measureOne(ctx context.Context, sc, wl string, sr *SizeResult, rules []Rule) (err error) {
	switch sc {
	case "b":
		if err := e.attach(Plan(rules)); err != nil {
			return err
		}
		defer func() {
			if derr := e.detach(); derr != nil {
				err = errors.Join(err, fmt.Errorf("detach: %w", derr))
			}
		}()
	case "c":
		took, aerr := iptablesApply(ctx, e.hostNsPath(), rules)
		defer func() {
			if rerr := iptablesRemove(context.WithoutCancel(ctx), e.hostNsPath()); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}()
		if aerr != nil {
			return aerr
		}
		sr.IptablesLoadAll = append(sr.IptablesLoadAll, float64(took.Microseconds())/1e3)
	}
	if err := e.checkEnforcement(sc != "a"); err != nil {
		return err
	}
	// The HTTP server shares this process: collect the garbage of the
	// set-up (a Sync of b allocates megabytes) now, so that no scenario's
	// measured run pays for its own set-up's collection.
	runtime.GC()
	// The measured run has BPF run-time statistics off: with them on, every
	// program run pays for two clock reads, which would bill moat for the
	// measurement. The cost per packet comes from a separate, shorter run
	// of the same workload with statistics on.
	if err := e.runWorkload(ctx, sr, sc, wl); err != nil || sc != "b" {
		return err
	}
	ps, err := openProgStats(e.cfg.PinRoot)
	if err != nil {
		return err
	}
	defer ps.Close()
	before, err := ps.sample()
	if err != nil {
		return err
	}
	saved := e.cfg.Duration
	e.cfg.Duration = min(saved, 2*time.Second)
	scratch := &SizeResult{HTTP: map[string]WrkResult{}, TCP: map[string]IperfResult{}, UDP: map[string]IperfResult{}}
	err = e.runWorkload(ctx, scratch, sc, wl)
	e.cfg.Duration = saved
	if err != nil {
		return fmt.Errorf("cost run: %w", err)
	}
	after, err := ps.sample()
	if err != nil {
		return err
	}
	sr.Prog[wl] = ps.cost(before, after)
	return nil
}

// runWorkload runs one workload against the current scenario and records
// its result in sr.
func (e *env) runWorkload(ctx context.Context, sr *SizeResult, sc, wl string) (err error) {
	switch wl {
	case "http":
		sr.HTTP[sc], err = e.runWrk(ctx)
	case "tcp":
		sr.TCP[sc], err = e.runIperf(ctx, false)
	case "udp":
		sr.UDP[sc], err = e.runIperf(ctx, true)
	}
	return err
}

// timeReplace times Syncs that replace the n-entry policy with another
// n-entry policy (every filler entry changes, the allowed flows stay) while
// the programs are attached, then checks the allowed flows still pass.
func (e *env) timeReplace(sr *SizeResult, rules, alt []Rule) (err error) {
	plan := Plan(rules)
	if err := e.attach(plan); err != nil {
		return err
	}
	defer func() {
		if derr := e.detach(); derr != nil {
			err = errors.Join(err, fmt.Errorf("detach: %w", derr))
		}
	}()
	plans := []*policy.Plan{Plan(alt), plan}
	for i := range e.cfg.ReplaceRepeats {
		e.dp.Settle() // one replacement at a time, as the agent makes them
		start := time.Now()
		if err := e.dp.Sync(plans[i%2], e.ifaces(), nil); err != nil {
			return fmt.Errorf("replace policy: %w", err)
		}
		sr.ReplaceAll = append(sr.ReplaceAll, float64(time.Since(start).Microseconds())/1e3)
	}
	e.log.Info("policy replaced", "rules", len(rules), "all_ms", sr.ReplaceAll)
	if err := e.checkEnforcement(true); err != nil {
		return fmt.Errorf("after replacing the policy: %w", err)
	}
	return nil
}

// checkEnforcement proves the scenario is what it claims: the allowed HTTP
// port answers, and the denied port answers only when nothing enforces.
func (e *env) checkEnforcement(enforced bool) error {
	if err := e.dial(httpPort, 2*time.Second); err != nil {
		return fmt.Errorf("check allowed flow to port %d: %w", httpPort, err)
	}
	err := e.dial(deniedPort, 300*time.Millisecond)
	switch {
	case enforced && err == nil:
		return fmt.Errorf("check enforcement: a connection to port %d (no rule allows it) succeeded", deniedPort)
	case !enforced && err != nil:
		return fmt.Errorf("check plain path to port %d: %w", deniedPort, err)
	}
	return nil
}

func (e *env) dial(port uint16, timeout time.Duration) error {
	return e.mgr.Do(e.clientEp, func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(serverAddr, port).String(), timeout)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
