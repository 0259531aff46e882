package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario results for one policy size.
type SizeResult struct {
	Rules  int `json:"rules"`
	Rounds int `json:"rounds"`
	// Per scenario: "a" no policy, "b" moat, "c" iptables.
	HTTP map[string]WrkResult   `json:"http"`
	TCP  map[string]IperfResult `json:"tcp"`
	UDP  map[string]IperfResult `json:"udp"`
	// Prog is moat's program cost per workload during (b).
	Prog map[string]ProgCost `json:"prog"`
	// ReplaceMs is the median time of a Sync that replaces the N-entry
	// policy with another N-entry policy (N-3 entries change).
	ReplaceMs  float64   `json:"replaceMs"`
	ReplaceAll []float64 `json:"replaceAllMs"`
	// IptablesLoadMs is how long iptables-restore took to load the N rules
	// (median over every load).
	IptablesLoadMs  float64   `json:"iptablesLoadMs"`
	IptablesLoadAll []float64 `json:"iptablesLoadAllMs,omitempty"`
	// Raw holds each round's headline number per workload and scenario.
	Raw map[string][]float64 `json:"raw,omitempty"`
	// Paired holds each round's own ratio per workload, "http/b/a",
	// "http/c/a", "tcp/b/a", "tcp/c/a", "udp/b/a": the scenarios of a round
	// run back to back, so these pair measurements seconds apart. The
	// table's b/a and c/a are their medians.
	Paired map[string][]float64 `json:"paired,omitempty"`
}

// Row is one line of the table: a metric at one policy size. A nil value
// was not measured (by design, not by failure).
type Row struct {
	Metric string   `json:"metric"`
	Rules  int      `json:"rules"`
	A      *float64 `json:"a,omitempty"`
	B      *float64 `json:"b,omitempty"`
	C      *float64 `json:"c,omitempty"`
	// BA and CA are the medians of the per-round paired ratios (the ratio
	// of the medians when the result has no paired ratios).
	BA *float64 `json:"bOverA,omitempty"`
	CA *float64 `json:"cOverA,omitempty"`
	// BAMin and BAMax are the extremes of the BAPairs paired b/a ratios:
	// how much the rounds disagreed.
	BAMin   *float64 `json:"bOverAMin,omitempty"`
	BAMax   *float64 `json:"bOverAMax,omitempty"`
	BAPairs int      `json:"bOverAPairs,omitempty"`
}

// Values returns the row's measured values.
func (r Row) Values() []float64 {
	var out []float64
	for _, p := range []*float64{r.A, r.B, r.C, r.BA, r.CA} {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// Goal is a target the numbers are compared with; a miss never fails the run.
type Goal struct {
	Name   string  `json:"name"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	// Status is PASS, MISS or N/A (not measurable in this run).
	Status string `json:"status"`
}

// Report is a whole run.
type Report struct {
	Started  time.Time    `json:"started"`
	Elapsed  string       `json:"elapsed"`
	Host     string       `json:"host"`
	Iptables string       `json:"iptables"`
	Duration string       `json:"duration"`
	Rounds   int          `json:"rounds"`
	Wrk      string       `json:"wrk"`
	Sizes    []SizeResult `json:"sizes"`
	Rows     []Row        `json:"rows"`
	Goals    []Goal       `json:"goals"`
	Notes    []string     `json:"notes"`
}

// Metric names (rows).
const (
	metricHTTP    = "http req/s (new conn per req)"
	metricTCP     = "tcp Gbit/s (iperf3)"
	metricUDP     = "udp 64B kpps received"
	metricNsHTTP  = "moat ns/packet, http new conns"
	metricNsUDP   = "moat ns/packet, udp 64B"
	metricReplace = "moat replace policy ms"
	metricIptLoad = "iptables-restore load ms"
)

func ptr(v float64) *float64 { return &v }

func ratio(num, den float64) *float64 {
	if den <= 0 {
		return nil
	}
	return ptr(num / den)
}

// pairedOr returns the median of s's paired ratios under key ("http/b/a",
// …), or fallback, the ratio of the medians, when there are none (a report
// written before pairing existed).
func pairedOr(s SizeResult, key string, fallback *float64) *float64 {
	if p := s.Paired[key]; len(p) > 0 {
		return ptr(median(p))
	}
	return fallback
}

// setSpread records the range of the paired b/a ratios p.
func (r *Row) setSpread(p []float64) {
	if len(p) == 0 {
		return
	}
	r.BAMin, r.BAMax, r.BAPairs = ptr(slices.Min(p)), ptr(slices.Max(p)), len(p)
}

// BuildRows derives the table rows from the size results. The a, b and c
// columns are the medians of the rates; b/a and c/a are the medians of the
// per-round paired ratios.
func BuildRows(sizes []SizeResult) []Row {
	var rows []Row
	for _, s := range sizes {
		if a, ok := s.HTTP["a"]; ok {
			r := Row{Metric: metricHTTP, Rules: s.Rules, A: ptr(a.RequestsPerSec)}
			if b, ok := s.HTTP["b"]; ok {
				r.B, r.BA = ptr(b.RequestsPerSec), pairedOr(s, "http/b/a", ratio(b.RequestsPerSec, a.RequestsPerSec))
				r.setSpread(s.Paired["http/b/a"])
			}
			if c, ok := s.HTTP["c"]; ok {
				r.C, r.CA = ptr(c.RequestsPerSec), pairedOr(s, "http/c/a", ratio(c.RequestsPerSec, a.RequestsPerSec))
			}
			rows = append(rows, r)
		}
		if a, ok := s.TCP["a"]; ok {
			r := Row{Metric: metricTCP, Rules: s.Rules, A: ptr(a.BitsPerSecond / 1e9)}
			if b, ok := s.TCP["b"]; ok {
				r.B, r.BA = ptr(b.BitsPerSecond/1e9), pairedOr(s, "tcp/b/a", ratio(b.BitsPerSecond, a.BitsPerSecond))
				r.setSpread(s.Paired["tcp/b/a"])
			}
			if c, ok := s.TCP["c"]; ok {
				r.C, r.CA = ptr(c.BitsPerSecond/1e9), pairedOr(s, "tcp/c/a", ratio(c.BitsPerSecond, a.BitsPerSecond))
			}
			rows = append(rows, r)
		}
		if a, ok := s.UDP["a"]; ok {
			r := Row{Metric: metricUDP, Rules: s.Rules, A: ptr(a.PacketsPerSecond / 1e3)}
			if b, ok := s.UDP["b"]; ok {
				r.B, r.BA = ptr(b.PacketsPerSecond/1e3), pairedOr(s, "udp/b/a", ratio(b.PacketsPerSecond, a.PacketsPerSecond))
				r.setSpread(s.Paired["udp/b/a"])
			}
			rows = append(rows, r)
		}
		if c, ok := s.Prog["http"]; ok {
			rows = append(rows, Row{Metric: metricNsHTTP, Rules: s.Rules, B: ptr(c.NsPerPacket)})
		}
		if c, ok := s.Prog["udp"]; ok {
			rows = append(rows, Row{Metric: metricNsUDP, Rules: s.Rules, B: ptr(c.NsPerPacket)})
		}
		if len(s.ReplaceAll) > 0 {
			rows = append(rows, Row{Metric: metricReplace, Rules: s.Rules, B: ptr(s.ReplaceMs)})
		}
		if _, ok := s.HTTP["c"]; ok {
			rows = append(rows, Row{Metric: metricIptLoad, Rules: s.Rules, C: ptr(s.IptablesLoadMs)})
		}
	}
	return rows
}

func findRow(rows []Row, metric string, rules int) (Row, bool) {
	for _, r := range rows {
		if r.Metric == metric && r.Rules == rules {
			return r, true
		}
	}
	return Row{}, false
}

// Goal targets.
const (
	goalTCPRatio  = 0.95
	goalUDPRatio  = 0.90
	goalFlatDrop  = 0.05 // b/a may fall by at most this from the smallest to the largest N
	goalFlatNs    = 1.10 // ns/packet may grow by at most 10 %
	goalReplaceMs = 50.0
	goalSizeRules = 10000
)

// EvaluateGoals compares the rows with the goals. Ratio goals apply at the
// largest N of the run (the goals name 10,000 rules); flatness compares the
// smallest and the largest N. Every ratio goal reads the row's BA, the
// median of the paired per-round ratios.
func EvaluateGoals(rows []Row, sizes []int) []Goal {
	if len(sizes) == 0 {
		return nil
	}
	lo, hi := sizes[0], sizes[len(sizes)-1]
	var goals []Goal
	atLeast := func(name string, v *float64, target float64) {
		g := Goal{Name: name, Target: fmt.Sprintf(">= %.2f", target), Status: "N/A"}
		if v != nil {
			g.Value = *v
			g.Status = passMiss(*v >= target)
		}
		goals = append(goals, g)
	}
	get := func(metric string, n int) (Row, bool) { return findRow(rows, metric, n) }
	suffix := fmt.Sprintf(" at %d rules", hi)
	if hi != goalSizeRules {
		suffix += fmt.Sprintf(" (goal is stated at %d)", goalSizeRules)
	}
	r, _ := get(metricHTTP, hi)
	atLeast("tcp short-conn http b/a"+suffix, r.BA, goalTCPRatio)
	r, _ = get(metricTCP, hi)
	atLeast("tcp throughput b/a"+suffix, r.BA, goalTCPRatio)
	r, _ = get(metricUDP, hi)
	atLeast("udp 64B pps b/a"+suffix, r.BA, goalUDPRatio)

	// Flat from the smallest to the largest size.
	flat := Goal{Name: fmt.Sprintf("flat b/a from %d to %d rules (worst drop over http, tcp, udp)", lo, hi),
		Target: fmt.Sprintf("<= %.2f", goalFlatDrop), Status: "N/A"}
	if lo != hi {
		worst, seen := 0.0, 0
		for _, m := range []string{metricHTTP, metricTCP, metricUDP} {
			a, ok1 := get(m, lo)
			b, ok2 := get(m, hi)
			if ok1 && ok2 && a.BA != nil && b.BA != nil {
				worst = max(worst, *a.BA-*b.BA)
				seen++
			}
		}
		if seen > 0 {
			flat.Value, flat.Status = worst, passMiss(worst <= goalFlatDrop)
		}
	}
	goals = append(goals, flat)
	flatNs := Goal{Name: fmt.Sprintf("flat ns/packet from %d to %d rules (worst growth, http and udp)", lo, hi),
		Target: fmt.Sprintf("<= %.2fx", goalFlatNs), Status: "N/A"}
	if lo != hi {
		worst, seen := 0.0, 0
		for _, m := range []string{metricNsHTTP, metricNsUDP} {
			a, ok1 := get(m, lo)
			b, ok2 := get(m, hi)
			if ok1 && ok2 && *a.B > 0 {
				worst = max(worst, *b.B / *a.B)
				seen++
			}
		}
		if seen > 0 {
			flatNs.Value, flatNs.Status = worst, passMiss(worst <= goalFlatNs)
		}
	}
	goals = append(goals, flatNs)

	rep := Goal{Name: "replace policy" + suffix, Target: fmt.Sprintf("<= %.0f ms", goalReplaceMs), Status: "N/A"}
	if r, ok := get(metricReplace, hi); ok {
		rep.Value, rep.Status = *r.B, passMiss(*r.B <= goalReplaceMs)
	}
	goals = append(goals, rep)
	return goals
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// Finish fills Rows and Goals from Sizes.
func (r *Report) Finish(sizes []int) {
	r.Rows = BuildRows(r.Sizes)
	r.Goals = EvaluateGoals(r.Rows, sizes)
	r.Elapsed = time.Since(r.Started).Round(time.Second).String()
}

// WriteTable prints the report for humans.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "\nmoat L3/L4 datapath benchmark — %s\n", r.Host)
	fmt.Fprintf(w, "each measurement %s, %d round(s) per size; wrk %s; %s; run took %s\n", r.Duration, r.Rounds, r.Wrk, r.Iptables, r.Elapsed)
	fmt.Fprintln(w, "a = no policy (no BPF), b = moat (BPF on both host veths), c = iptables FORWARD (allowed flows last)")
	fmt.Fprintln(w, "a, b, c: medians over the rounds; b/a, c/a: medians of each round's own ratio; b/a range: lowest–highest round (rounds paired)")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\trules\ta\tb\tc\tb/a\tc/a\tb/a range\t")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Metric, row.Rules,
			cell(row.A, "%.1f"), cell(row.B, "%.1f"), cell(row.C, "%.1f"), cell(row.BA, "%.3f"), cell(row.CA, "%.3f"), spreadCell(row))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "goal\ttarget\tvalue\tstatus")
	for _, g := range r.Goals {
		v := "-"
		if g.Status != "N/A" {
			v = fmt.Sprintf("%.3f", g.Value)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.Name, g.Target, v, g.Status)
	}
	tw.Flush()
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
}

func cell(v *float64, format string) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}

// spreadCell renders the range of the row's paired b/a ratios, "-" when
// fewer than two rounds paired (no spread to show).
func spreadCell(r Row) string {
	if r.BAPairs < 2 || r.BAMin == nil || r.BAMax == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f–%.3f (%d)", *r.BAMin, *r.BAMax, r.BAPairs)
}

// WriteJSONFile writes the report as indented JSON.
func (r *Report) WriteJSONFile(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	return nil
}

// standardNotes are printed with every report.
func standardNotes() []string {
	return []string{
		"c places the allowed flows' ACCEPT rules last, after N-3 others: the worst case for linear matching; ESTABLISHED,RELATED is accepted first, so only a connection's first packet walks the list",
		"moat's plan: the server's ingress holds the N entries across 1,000 identities (ipcache has all 1,000 addresses); the client's egress allows the 3 flows to the server",
		"ns/packet = from_endpoint + to_endpoint run time per packet forwarded (from_endpoint runs) during that (b) workload: every packet passes from_endpoint, only those on the routed path (a flow's first packets) pass to_endpoint too; http is dominated by new connections (policy lookup path), udp is one flow (conntrack hit path); measured in a separate 2 s run with BPF run-time stats on (the throughput runs have them off)",
		"udp is iperf3 -u -l 64 -b 0 (64-byte payload); kpps counts what the server received",
		"b/a and c/a are medians of per-round paired ratios: within a round each workload runs in its scenarios as a palindrome, a b c c b a, each scenario's two runs are averaged and each round's ratio compares those averages, and the median is taken over the rounds; b/a range is the lowest and highest round's ratio (count in brackets); a, b and c are the medians of the rates, so b/a need not equal b divided by a",
		"shared, noisy machine: compare ratios measured side by side, not absolute numbers across runs",
	}
}

// hostSummary describes the machine.
func hostSummary() string {
	kernel := "unknown kernel"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d CPUs", kernel, runtime.NumCPU())
}
