package main

// report.go owns the report: per-run figures, per-scenario medians over the
// rounds, per-round ratios against the direct scenario, the goals, the
// table and the JSON.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Report is one run of the bench.
type Report struct {
	Config          Config  `json:"config"`
	DurationSeconds float64 `json:"durationSeconds"`
	TTLSeconds      float64 `json:"ttlSeconds"`
	RotateSeconds   float64 `json:"rotateSeconds"`
	CPUs            int     `json:"cpus"`
	// Runs are every measurement, in order.
	Runs []RunReport `json:"runs"`
	// Scenarios are medians over the rounds (each round's value the mean
	// of the scenario's two runs).
	Scenarios []ScenarioReport `json:"scenarios"`
	// Ratios compare the proxy scenarios with direct, round by round.
	Ratios []RatioReport `json:"ratios"`
	Goals  []GoalReport  `json:"goals"`
	// Profiles: the top symbols of perf record on the agent, per scenario.
	Profiles    map[string][]string `json:"profiles,omitempty"`
	ProfileNote string              `json:"profileNote,omitempty"`

	rounds [][]runResult
}

// RunReport is one dnsperf run.
type RunReport struct {
	Round    int    `json:"round"`
	Scenario string `json:"scenario"`
	Rate     int    `json:"rate"` // 0: max throughput
	// QPS counts NOERROR answers per second (dnsperf's rate times the
	// NOERROR share); ErrorShare is the share of other answers and losses.
	QPS        float64 `json:"qps"`
	ErrorShare float64 `json:"errorShare"`
	Sent       int     `json:"sent"`
	Lost       int     `json:"lost"`
	// Client-side latency (dnsperf -v; fixed-rate runs only).
	P50Ms float64 `json:"p50Ms,omitempty"`
	P99Ms float64 `json:"p99Ms,omitempty"`
	MaxMs float64 `json:"maxMs,omitempty"`
	AvgMs float64 `json:"avgMs"`
	// Agent CPU over the run, and per 1,000 completed queries.
	AgentCPUSeconds float64 `json:"agentCpuSeconds"`
	AgentCPUMsPer1k float64 `json:"agentCpuMsPer1k"`
	DNSPerfCPU      float64 `json:"dnsperfCpuSeconds"`
	// The proxy's own histograms (NaN-free: 0 when empty).
	Holds        float64 `json:"holds"`
	HoldMeanMs   float64 `json:"holdMeanMs"`
	HoldP50Ms    float64 `json:"holdP50Ms"`
	HoldP99Ms    float64 `json:"holdP99Ms"`
	ProcP50Ms    float64 `json:"processingP50Ms"`
	ProcP99Ms    float64 `json:"processingP99Ms"`
	UpP50Ms      float64 `json:"upstreamP50Ms"`
	UpP99Ms      float64 `json:"upstreamP99Ms"`
	HoldTimeouts float64 `json:"holdTimeouts"`
	LearnErrors  float64 `json:"learnErrors"`
	Evicted      float64 `json:"cacheEvictions"`
	CacheIPs     float64 `json:"cacheIps"`
	// Rejected: the proxy's rejections by reason (overload, timeouts, …).
	Rejected        map[string]float64 `json:"rejected,omitempty"`
	Forwarded       float64            `json:"proxyForwarded"`
	UpstreamQueries uint64             `json:"upstreamQueries"`
	Anomaly         string             `json:"anomaly,omitempty"`
}

// ScenarioReport is a scenario's medians.
type ScenarioReport struct {
	Name string `json:"name"`
	// Max-throughput runs.
	MaxQPS          float64 `json:"maxQps"`
	AgentCPUMsPer1k float64 `json:"agentCpuMsPer1k"`
	// QPSPerAgentCore: completed queries per agent CPU second (0 when the
	// agent used no CPU, as in direct).
	QPSPerAgentCore float64 `json:"qpsPerAgentCore"`
	MaxHoldP50Ms    float64 `json:"maxHoldP50Ms"`
	MaxHoldP99Ms    float64 `json:"maxHoldP99Ms"`
	// Fixed-rate runs.
	RateQPS    float64 `json:"rateQps"`
	P50Ms      float64 `json:"p50Ms"`
	P99Ms      float64 `json:"p99Ms"`
	HoldMeanMs float64 `json:"holdMeanMs"`
	HoldP50Ms  float64 `json:"holdP50Ms"`
	HoldP99Ms  float64 `json:"holdP99Ms"`
	ProcP50Ms  float64 `json:"processingP50Ms"`
	ProcP99Ms  float64 `json:"processingP99Ms"`
	UpP99Ms    float64 `json:"upstreamP99Ms"`
	// HoldTimeoutShare: answers released at the hold bound per hold, at the
	// fixed rate.
	HoldTimeoutShare float64 `json:"holdTimeoutShare"`
	MaxErrorShare    float64 `json:"maxErrorShare"`
	RateErrorShare   float64 `json:"rateErrorShare"`
	Holds            float64 `json:"holdsPerRun"`
	HoldTimeouts     float64 `json:"holdTimeoutsTotal"`
	Lost             int     `json:"lostTotal"`
}

// RatioReport compares a proxy scenario with direct: medians over rounds
// of each round's own ratio or difference, with min and max.
type RatioReport struct {
	Scenario      string     `json:"scenario"`
	QPSRatio      [3]float64 `json:"qpsRatio"`      // median, min, max
	AddedP50Ms    [3]float64 `json:"addedP50Ms"`    // at the fixed rate
	AddedP99Ms    [3]float64 `json:"addedP99Ms"`    // at the fixed rate
	CPUMsPer1kAdd [3]float64 `json:"cpuMsPer1kAdd"` // agent CPU per 1k over direct's
}

// GoalReport is one goal against its measurement.
type GoalReport struct {
	Goal     string  `json:"goal"`
	Scenario string  `json:"scenario"`
	Value    float64 `json:"value"`
	Limit    float64 `json:"limit"`
	Met      bool    `json:"met"`
}

func newReport(cfg Config) *Report {
	return &Report{Config: cfg, DurationSeconds: cfg.Duration.Seconds(), TTLSeconds: cfg.TTL.Seconds(), RotateSeconds: cfg.Rotate.Seconds(), CPUs: runtime.NumCPU()}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// msq is a histogram quantile in milliseconds, 0 when empty.
func msq(h histogram, q float64) float64 {
	v := h.quantile(q)
	if math.IsNaN(v) {
		return 0
	}
	return v * 1000
}

func (rep *Report) addRound(runs []runResult) {
	rep.rounds = append(rep.rounds, runs)
	round := len(rep.rounds)
	for _, r := range runs {
		p := r.Perf
		rr := RunReport{
			Round: round, Scenario: r.Scenario, Rate: r.Rate, QPS: p.QPS, Sent: p.Sent, Lost: p.Lost, AvgMs: ms(p.AvgLatency), Rejected: r.Rejected,
			Forwarded: r.Allowed, UpstreamQueries: r.UpstreamQueries, Anomaly: r.Anomaly,
			AgentCPUSeconds: r.AgentCPU.Seconds(), DNSPerfCPU: p.CPU.Seconds(),
			Holds: r.Hold.count, HoldP50Ms: msq(r.Hold, 0.5), HoldP99Ms: msq(r.Hold, 0.99),
			HoldMeanMs: r.Hold.sum * 1000 / float64(max(r.Hold.count, 1)),
			ProcP50Ms:  msq(r.Process, 0.5), ProcP99Ms: msq(r.Process, 0.99),
			UpP50Ms: msq(r.Upstream, 0.5), UpP99Ms: msq(r.Upstream, 0.99),
			HoldTimeouts: r.HoldTimeouts, LearnErrors: r.LearnErrors, Evicted: r.Evicted, CacheIPs: r.CacheIPs,
		}
		if p.Completed > 0 {
			rr.AgentCPUMsPer1k = r.AgentCPU.Seconds() * 1000 / float64(p.Completed) * 1000
			if len(p.Rcodes) > 0 {
				rr.QPS = p.QPS * float64(p.Rcodes["NOERROR"]) / float64(p.Completed)
			}
		}
		if p.Sent > 0 {
			rr.ErrorShare = 1 - float64(p.Rcodes["NOERROR"])/float64(p.Sent)
			if len(p.Rcodes) == 0 {
				rr.ErrorShare = float64(p.Lost) / float64(p.Sent)
			}
		}
		if len(p.Latencies) > 0 {
			rr.P50Ms = ms(latencyQuantile(p.Latencies, 0.5))
			rr.P99Ms = ms(latencyQuantile(p.Latencies, 0.99))
			rr.MaxMs = ms(p.Latencies[len(p.Latencies)-1])
		}
		rep.Runs = append(rep.Runs, rr)
	}
}

// perRound is, for each round, the mean of f over the scenario's runs at
// the given kind (max: rate 0).
func (rep *Report) perRound(scenario string, max bool, f func(RunReport) float64) []float64 {
	var out []float64
	for round := 1; round <= len(rep.rounds); round++ {
		var s float64
		n := 0
		for _, r := range rep.Runs {
			if r.Round == round && r.Scenario == scenario && (r.Rate == 0) == max {
				s += f(r)
				n++
			}
		}
		if n > 0 {
			out = append(out, s/float64(n))
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64) [3]float64 {
	if len(xs) == 0 {
		return [3]float64{}
	}
	return [3]float64{median(xs), slices.Min(xs), slices.Max(xs)}
}

// finish computes the scenario medians, the ratios and the goals.
func (rep *Report) finish() {
	med := func(sc string, max bool, f func(RunReport) float64) float64 { return median(rep.perRound(sc, max, f)) }
	for _, sc := range []string{"direct", "proxy", "proxy+learn"} {
		s := ScenarioReport{
			Name:            sc,
			MaxQPS:          med(sc, true, func(r RunReport) float64 { return r.QPS }),
			AgentCPUMsPer1k: med(sc, true, func(r RunReport) float64 { return r.AgentCPUMsPer1k }),
			MaxHoldP50Ms:    med(sc, true, func(r RunReport) float64 { return r.HoldP50Ms }),
			MaxHoldP99Ms:    med(sc, true, func(r RunReport) float64 { return r.HoldP99Ms }),
			RateQPS:         med(sc, false, func(r RunReport) float64 { return r.QPS }),
			P50Ms:           med(sc, false, func(r RunReport) float64 { return r.P50Ms }),
			P99Ms:           med(sc, false, func(r RunReport) float64 { return r.P99Ms }),
			HoldMeanMs:      med(sc, false, func(r RunReport) float64 { return r.HoldMeanMs }),
			HoldP50Ms:       med(sc, false, func(r RunReport) float64 { return r.HoldP50Ms }),
			HoldP99Ms:       med(sc, false, func(r RunReport) float64 { return r.HoldP99Ms }),
			ProcP50Ms:       med(sc, false, func(r RunReport) float64 { return r.ProcP50Ms }),
			ProcP99Ms:       med(sc, false, func(r RunReport) float64 { return r.ProcP99Ms }),
			UpP99Ms:         med(sc, false, func(r RunReport) float64 { return r.UpP99Ms }),
			Holds:           med(sc, false, func(r RunReport) float64 { return r.Holds }),
			MaxErrorShare:   med(sc, true, func(r RunReport) float64 { return r.ErrorShare }),
			RateErrorShare:  med(sc, false, func(r RunReport) float64 { return r.ErrorShare }),
		}
		if s.AgentCPUMsPer1k > 0 && sc != "direct" {
			s.QPSPerAgentCore = 1e6 / s.AgentCPUMsPer1k
		}
		s.HoldTimeoutShare = med(sc, false, func(r RunReport) float64 { return r.HoldTimeouts / max(r.Holds, 1) })
		for _, r := range rep.Runs {
			if r.Scenario == sc {
				s.HoldTimeouts += r.HoldTimeouts
				s.Lost += r.Lost
			}
		}
		rep.Scenarios = append(rep.Scenarios, s)
	}
	for _, sc := range []string{"proxy", "proxy+learn"} {
		var qps, p50, p99, cpu []float64
		for round := 1; round <= len(rep.rounds); round++ {
			get := func(name string, max bool, f func(RunReport) float64) float64 {
				var s float64
				n := 0
				for _, r := range rep.Runs {
					if r.Round == round && r.Scenario == name && (r.Rate == 0) == max {
						s += f(r)
						n++
					}
				}
				return s / float64(max1(n))
			}
			if d := get("direct", true, func(r RunReport) float64 { return r.QPS }); d > 0 {
				qps = append(qps, get(sc, true, func(r RunReport) float64 { return r.QPS })/d)
			}
			p50 = append(p50, get(sc, false, func(r RunReport) float64 { return r.P50Ms })-get("direct", false, func(r RunReport) float64 { return r.P50Ms }))
			p99 = append(p99, get(sc, false, func(r RunReport) float64 { return r.P99Ms })-get("direct", false, func(r RunReport) float64 { return r.P99Ms }))
			cpu = append(cpu, get(sc, true, func(r RunReport) float64 { return r.AgentCPUMsPer1k })-get("direct", true, func(r RunReport) float64 { return r.AgentCPUMsPer1k }))
		}
		rep.Ratios = append(rep.Ratios, RatioReport{Scenario: sc, QPSRatio: spread(qps), AddedP50Ms: spread(p50), AddedP99Ms: spread(p99), CPUMsPer1kAdd: spread(cpu)})
	}
	byName := map[string]ScenarioReport{}
	for _, s := range rep.Scenarios {
		byName[s.Name] = s
	}
	for _, rr := range rep.Ratios {
		s := byName[rr.Scenario]
		rep.Goals = append(rep.Goals,
			GoalReport{Goal: "qps per agent core >=", Scenario: rr.Scenario, Value: s.QPSPerAgentCore, Limit: 15000, Met: s.QPSPerAgentCore >= 15000},
			GoalReport{Goal: fmt.Sprintf("added p99 at %d qps (ms) <=", rep.Config.Rate), Scenario: rr.Scenario, Value: rr.AddedP99Ms[0], Limit: 1, Met: rr.AddedP99Ms[0] <= 1},
		)
	}
	learn := byName["proxy+learn"]
	rep.Goals = append(rep.Goals,
		GoalReport{Goal: fmt.Sprintf("hold p99 at %d qps (ms) <=", rep.Config.Rate), Scenario: "proxy+learn", Value: learn.HoldP99Ms, Limit: 10, Met: learn.HoldP99Ms <= 10 && learn.Holds > 0},
		GoalReport{Goal: "hold p99 at max qps (ms) <=", Scenario: "proxy+learn", Value: learn.MaxHoldP99Ms, Limit: 10, Met: learn.MaxHoldP99Ms <= 10 && learn.Holds > 0},
	)
}

func max1(n int) int { return max(n, 1) }

// WriteTable prints the report for people.
func (rep *Report) WriteTable(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "moat bench-dns: %d rules.dns entries, %d toFQDNs zones, %d names/scenario, %d IPs/answer, TTL %s, rotate %s; %d rounds of a b c c b a, %s runs; %d CPUs\n",
		c.Patterns, c.Selected, c.Names, c.IPs, c.TTL, c.Rotate, len(rep.rounds), c.Duration, rep.CPUs)
	if len(rep.Scenarios) == 0 {
		fmt.Fprintln(w, "  (no complete round)")
		return
	}
	fmt.Fprintf(w, "\n  %-12s | %9s %6s %12s %11s | %9s %6s %8s %8s | %9s %9s %9s %9s %9s\n", "scenario", "max qps", "err", "cpu ms/1k q", "q/s/core", "rate qps", "err", "p50 ms", "p99 ms", "hold avg", "hold p50", "hold p99", "proc p99", "hold@max")
	fmt.Fprintf(w, "  %s\n", strings.Repeat("-", 152))
	for _, s := range rep.Scenarios {
		perCore := "-"
		if s.QPSPerAgentCore > 0 {
			perCore = fmt.Sprintf("%.0f", s.QPSPerAgentCore)
		}
		hold := func(v float64) string {
			if s.Holds == 0 && s.Name != "proxy+learn" {
				return "-"
			}
			return fmt.Sprintf("%.3f", v)
		}
		fmt.Fprintf(w, "  %-12s | %9.0f %5.1f%% %12.1f %11s | %9.0f %5.1f%% %8.3f %8.3f | %9s %9s %9s %9.3f %9s\n",
			s.Name, s.MaxQPS, 100*s.MaxErrorShare, s.AgentCPUMsPer1k, perCore, s.RateQPS, 100*s.RateErrorShare, s.P50Ms, s.P99Ms, hold(s.HoldMeanMs), hold(s.HoldP50Ms), hold(s.HoldP99Ms), s.ProcP99Ms, hold(s.MaxHoldP99Ms))
	}
	fmt.Fprintln(w, "\n  vs direct, same round (median [min..max]):")
	for _, r := range rep.Ratios {
		fmt.Fprintf(w, "    %-12s max qps x%.2f [%.2f..%.2f]   added p50 %+.3f ms   added p99 %+.3f ms [%+.3f..%+.3f]   agent cpu +%.1f ms/1k q\n",
			r.Scenario, r.QPSRatio[0], r.QPSRatio[1], r.QPSRatio[2], r.AddedP50Ms[0], r.AddedP99Ms[0], r.AddedP99Ms[1], r.AddedP99Ms[2], r.CPUMsPer1kAdd[0])
	}
	fmt.Fprintln(w, "\n  goals:")
	for _, g := range rep.Goals {
		verdict := "MISS"
		if g.Met {
			verdict = "PASS"
		}
		fmt.Fprintf(w, "    %-4s %-12s %-32s %10.3f (limit %g)\n", verdict, g.Scenario, g.Goal, g.Value, g.Limit)
	}
	for _, s := range rep.Scenarios {
		if s.HoldTimeouts > 0 || s.Lost > 0 {
			fmt.Fprintf(w, "  %s: %d queries lost, %.0f answers released at the hold bound over all runs (%.1f%% of holds at the fixed rate)\n", s.Name, s.Lost, s.HoldTimeouts, 100*s.HoldTimeoutShare)
		}
	}
	fmt.Fprintln(w, "  (qps: NOERROR answers per second; err: other answers (SERVFAIL: overload, upstream timeout) and losses per query;")
	fmt.Fprintln(w, "   latency: dnsperf, client side; hold and proc: the proxy's histograms, linear within buckets of 50us x 2^k;")
	fmt.Fprintln(w, "   q/s/core: completed queries per second of agent CPU, utime+stime from /proc)")
	for _, r := range rep.Runs {
		if r.Anomaly != "" {
			fmt.Fprintf(w, "  ANOMALY round %d %s rate %d: %s\n", r.Round, r.Scenario, r.Rate, r.Anomaly)
		}
	}
	for _, name := range []string{"proxy", "proxy+learn"} {
		if lines := rep.Profiles[name]; len(lines) > 0 {
			fmt.Fprintf(w, "\n  agent profile, %s at max qps (perf, self time):\n", name)
			for _, l := range lines {
				fmt.Fprintf(w, "    %s\n", l)
			}
		}
	}
	if rep.ProfileNote != "" {
		fmt.Fprintf(w, "\n  profile: %s\n", rep.ProfileNote)
	}
}

// WriteJSONFile writes the report as indented JSON.
func (rep *Report) WriteJSONFile(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
