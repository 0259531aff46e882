package main

// run.go owns the rounds: the scenarios in palindrome order, each
// scenario's max-throughput and fixed-rate runs, and what every run reads
// around dnsperf (agent CPU, metric deltas).

import (
	"context"
	"fmt"

	"github.com/miekg/dns"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"time"
)

// scenario is one of (a), (b), (c).
type scenario struct {
	Name   string
	Policy bool
	File   string // dnsperf input
}

// runResult is one dnsperf run with what the agent did meanwhile.
type runResult struct {
	Scenario string
	Rate     int // 0: max throughput
	Perf     *perfResult
	AgentCPU time.Duration
	Hold     histogram
	Process  histogram
	Upstream histogram
	// HoldTimeouts and LearnErrors: answers released past the hold bound or
	// after a failed learn; Allowed: queries the proxy forwarded.
	HoldTimeouts, LearnErrors, Allowed, Evicted float64
	CacheIPs                                    float64
	// Rejected: moat_dnsproxy_rejected_total by reason over the run.
	Rejected map[string]float64
	// UpstreamQueries: queries the upstream server received over the run.
	UpstreamQueries uint64
	// Anomaly: what the run's own checks found wrong (reported, the bench
	// goes on).
	Anomaly string
}

// Run builds the world, runs the rounds and returns the report.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (rep *Report, err error) {
	e, err := setup(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	defer func() {
		if terr := e.teardown(); terr != nil {
			log.Error("teardown", "err", terr)
			if err == nil {
				err = terr
			}
		}
	}()
	files := map[bool]string{}
	for _, sel := range []bool{false, true} {
		p := filepath.Join(e.dir, fmt.Sprintf("queries-selected-%v.txt", sel))
		if err := os.WriteFile(p, []byte(queryFile(cfg, queryNames(cfg, sel))), 0o640); err != nil {
			return nil, err
		}
		files[sel] = p
	}
	a := scenario{Name: "direct", File: files[false]}
	b := scenario{Name: "proxy", Policy: true, File: files[false]}
	c := scenario{Name: "proxy+learn", Policy: true, File: files[true]}
	order := []scenario{a, b, c, c, b, a}

	rep = newReport(cfg)
	policyOn := false
	for round := range cfg.Rounds {
		var runs []runResult
		for _, sc := range order {
			if sc.Policy != policyOn {
				if err := e.setPolicy(ctx, sc.Policy); err != nil {
					return rep, err
				}
				policyOn = sc.Policy
			}
			for _, rate := range []int{0, cfg.Rate} {
				r, err := e.measure(ctx, sc, rate)
				if err != nil {
					return rep, fmt.Errorf("round %d, %s, rate %d: %w", round+1, sc.Name, rate, err)
				}
				if err := r.check(sc); err != nil {
					return rep, fmt.Errorf("round %d, %s: %w", round+1, sc.Name, err)
				}
				r.Anomaly = r.anomaly(sc)
				if sc.Policy {
					// A fresh socket must still meet the proxy.
					if rc, err := e.query(probeName, dns.TypeA); err != nil || rc != dns.RcodeRefused {
						r.Anomaly += fmt.Sprintf("; after the run %s got %s (%v), want REFUSED from the proxy", probeName, dns.RcodeToString[rc], err)
					}
				}
				if r.Anomaly != "" {
					log.Warn("anomaly", "round", round+1, "scenario", sc.Name, "rate", rate, "what", r.Anomaly)
				}
				log.Info("run", "round", round+1, "scenario", sc.Name, "rate", rate, "qps", math.Round(r.Perf.QPS),
					"p99", latencyQuantile(r.Perf.Latencies, 0.99), "agent_cpu", r.AgentCPU, "holds", r.Hold.count,
					"rcodes", r.Perf.Rcodes, "lost", r.Perf.Lost, "rejected", r.Rejected)
				runs = append(runs, r)
			}
		}
		rep.addRound(runs)
	}
	rep.finish()
	if cfg.Profile {
		rep.Profiles, err = e.profile(ctx, []scenario{b, c}, &policyOn)
		if err != nil {
			log.Warn("profile", "err", err)
			rep.ProfileNote = err.Error()
			err = nil
		}
	} else {
		rep.ProfileNote = "not profiled (-profile=false)"
	}
	return rep, nil
}

// measure runs dnsperf once and reads the agent around it.
func (e *env) measure(ctx context.Context, sc scenario, rate int) (runResult, error) {
	r := runResult{Scenario: sc.Name, Rate: rate}
	m0, err := scrapeAgent(ctx, e.metricsAddr)
	if err != nil {
		return r, err
	}
	cpu0, err := processCPU(e.pid())
	if err != nil {
		return r, err
	}
	up0 := e.up.queries.Load()
	args := dnsperfArgs(e.netnsName("client"), serverAddr.String(), sc.File, e.cfg.Duration, rate, e.cfg.Clients, e.cfg.Outstanding)
	r.Perf, err = runDNSPerf(ctx, args)
	if err != nil {
		return r, err
	}
	cpu1, err := processCPU(e.pid())
	if err != nil {
		return r, err
	}
	m1, err := scrapeAgent(ctx, e.metricsAddr)
	if err != nil {
		return r, err
	}
	r.AgentCPU = cpu1 - cpu0
	r.UpstreamQueries = e.up.queries.Load() - up0
	r.Hold = m1.histogram(metricHold).sub(m0.histogram(metricHold))
	r.Process = m1.histogram(metricProcessing).sub(m0.histogram(metricProcessing))
	r.Upstream = m1.histogram(metricUpstream).sub(m0.histogram(metricUpstream))
	delta := func(name string, want map[string]string) float64 { return m1.sum(name, want) - m0.sum(name, want) }
	r.HoldTimeouts = delta(metricRejected, map[string]string{"reason": "hold_timeout"})
	r.LearnErrors = delta(metricRejected, map[string]string{"reason": "learn_error"})
	r.Allowed = delta(metricQueries, map[string]string{"verdict": "allowed"})
	r.Evicted = delta(metricEvictions, nil)
	r.CacheIPs = m1.sum(metricCacheIPs, nil)
	r.Rejected = map[string]float64{}
	for labels, v := range m1[metricRejected] {
		if d := v - m0[metricRejected][labels]; d > 0 {
			r.Rejected[label(labels, "reason")] += d
		}
	}
	return r, nil
}

// check fails a run whose answers show the scenario is not what it claims:
// a refused query (the rules do not allow the names), a proxy scenario the
// proxy did not see, or a direct one it did.
func (r runResult) check(sc scenario) error {
	p := r.Perf
	if p.Completed == 0 {
		return fmt.Errorf("no query completed (%d sent, %d lost)", p.Sent, p.Lost)
	}
	// REFUSED means the rules do not allow the names: the bench is wrong.
	// SERVFAIL is the proxy shedding load or an upstream timeout: a
	// result, reported as the error share (qps counts NOERROR only).
	if n := p.Rcodes["REFUSED"]; n > 0 {
		return fmt.Errorf("%d queries REFUSED: the policy does not allow the bench's names (proxy rejections %v)", n, r.Rejected)
	}
	if p.Rcodes["NOERROR"] == 0 {
		return fmt.Errorf("no NOERROR answer: %v (proxy rejections %v)", p.Rcodes, r.Rejected)
	}
	if !sc.Policy && r.Allowed > 0 {
		return fmt.Errorf("the proxy forwarded %.0f queries in the direct scenario", r.Allowed)
	}
	return nil
}

// anomaly reports queries that did not go through the proxy in a proxy
// scenario: the upstream received more queries, or dnsperf got more
// NOERROR answers, than the proxy forwarded (SERVFAILs the proxy made when
// shedding load are answers it did not forward, and fine).
func (r runResult) anomaly(sc scenario) string {
	if !sc.Policy {
		return ""
	}
	slack := r.Allowed*0.01 + 10 // queries in flight across the scrapes
	if noerr := float64(r.Perf.Rcodes["NOERROR"]); float64(r.UpstreamQueries) > r.Allowed+slack || noerr > r.Allowed+slack {
		return fmt.Sprintf("the proxy forwarded %.0f queries, the upstream received %d, dnsperf got %.0f NOERROR answers: queries that bypassed the proxy",
			r.Allowed, r.UpstreamQueries, noerr)
	}
	return ""
}
