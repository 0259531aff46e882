package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sizes builds two sizes' results with the given b/a ratios for http, tcp
// and udp, and ns/packet and replace times for b.
func sizesFor(ratioLo, ratioHi, nsLo, nsHi, replaceHi float64) []SizeResult {
	mk := func(n int, ratio, ns, replace float64) SizeResult {
		s := newSizeResult(n)
		s.HTTP["a"] = WrkResult{RequestsPerSec: 1000}
		s.HTTP["b"] = WrkResult{RequestsPerSec: 1000 * ratio}
		s.HTTP["c"] = WrkResult{RequestsPerSec: 500}
		s.TCP["a"] = IperfResult{BitsPerSecond: 10e9}
		s.TCP["b"] = IperfResult{BitsPerSecond: 10e9 * ratio}
		s.TCP["c"] = IperfResult{BitsPerSecond: 9e9}
		s.UDP["a"] = IperfResult{PacketsPerSecond: 200e3}
		s.UDP["b"] = IperfResult{PacketsPerSecond: 200e3 * ratio}
		s.Prog["http"] = ProgCost{NsPerPacket: ns}
		s.Prog["udp"] = ProgCost{NsPerPacket: ns}
		s.ReplaceAll = []float64{replace}
		s.ReplaceMs = replace
		s.IptablesLoadMs = 30
		return s
	}
	return []SizeResult{mk(1000, ratioLo, nsLo, 5), mk(10000, ratioHi, nsHi, replaceHi)}
}

func TestBuildRows(t *testing.T) {
	rows := BuildRows(sizesFor(0.98, 0.97, 300, 310, 40))
	if got, want := len(rows), 2*7; got != want {
		t.Fatalf("got %d rows, want %d", got, want)
	}
	for _, r := range rows {
		if len(r.Values()) == 0 {
			t.Errorf("row %s/%d has no value", r.Metric, r.Rules)
		}
	}
	r, ok := findRow(rows, metricHTTP, 10000)
	if !ok || r.BA == nil || *r.BA != 0.97 || r.CA == nil || *r.CA != 0.5 {
		t.Errorf("http row at 10k = %+v, want b/a 0.97 and c/a 0.5", r)
	}
	if r, ok := findRow(rows, metricUDP, 1000); !ok || r.C != nil || r.CA != nil {
		t.Errorf("udp row = %+v, want no c column", r)
	}
}

func TestEvaluateGoals(t *testing.T) {
	tests := []struct {
		name  string
		sizes []SizeResult
		want  map[string]string // goal name prefix → status
	}{
		{
			name:  "all pass",
			sizes: sizesFor(0.98, 0.97, 300, 310, 40),
			want: map[string]string{"tcp short-conn": "PASS", "tcp throughput": "PASS", "udp 64B": "PASS",
				"flat b/a": "PASS", "flat ns/packet": "PASS", "replace": "PASS"},
		},
		{
			name:  "all miss",
			sizes: sizesFor(0.98, 0.80, 300, 600, 80),
			want: map[string]string{"tcp short-conn": "MISS", "tcp throughput": "MISS", "udp 64B": "MISS",
				"flat b/a": "MISS", "flat ns/packet": "MISS", "replace": "MISS"},
		},
		{
			name:  "one size: flatness not measurable",
			sizes: sizesFor(0.98, 0.97, 300, 310, 40)[1:],
			want:  map[string]string{"tcp throughput": "PASS", "flat b/a": "N/A", "flat ns/packet": "N/A"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ns []int
			for _, s := range tc.sizes {
				ns = append(ns, s.Rules)
			}
			goals := EvaluateGoals(BuildRows(tc.sizes), ns)
			for prefix, want := range tc.want {
				found := false
				for _, g := range goals {
					if strings.HasPrefix(g.Name, prefix) {
						found = true
						if g.Status != want {
							t.Errorf("goal %q: status %s (value %.3f), want %s", g.Name, g.Status, g.Value, want)
						}
					}
				}
				if !found {
					t.Errorf("no goal named %q…", prefix)
				}
			}
		})
	}
}

func TestReportOutput(t *testing.T) {
	r := &Report{Host: "test", Sizes: sizesFor(0.98, 0.97, 300, 310, 40), Notes: []string{"a note"}}
	r.Finish([]int{1000, 10000})
	var buf bytes.Buffer
	r.WriteTable(&buf)
	for _, want := range []string{metricHTTP, metricReplace, "PASS", "note: a note", "0.970"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSONFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("decode report: %v", err)
	}
	if len(back.Rows) != len(r.Rows) || len(back.Goals) != len(r.Goals) {
		t.Errorf("round trip: %d rows, %d goals; want %d, %d", len(back.Rows), len(back.Goals), len(r.Rows), len(r.Goals))
	}
}

func TestMergeRounds(t *testing.T) {
	r1, r2, r3 := newSizeResult(1000), newSizeResult(1000), newSizeResult(1000)
	r1.HTTP["a"] = WrkResult{RequestsPerSec: 100, Requests: 500, SocketErrors: 1}
	r2.HTTP["a"] = WrkResult{RequestsPerSec: 300, Requests: 1500}
	r3.HTTP["a"] = WrkResult{RequestsPerSec: 200, Requests: 1000}
	r1.Prog["udp"] = ProgCost{NsPerPacket: 10, Runs: map[string]uint64{"p": 5}, NsPerRun: map[string]float64{"p": 10}}
	r2.Prog["udp"] = ProgCost{NsPerPacket: 30, Runs: map[string]uint64{"p": 5}, NsPerRun: map[string]float64{"p": 30}}
	r1.ReplaceAll, r2.ReplaceAll, r3.ReplaceAll = []float64{1, 9}, []float64{2}, []float64{3}
	got := MergeRounds(1000, []SizeResult{r1, r2, r3})
	checks := []struct {
		name      string
		got, want float64
	}{
		{"median req/s", got.HTTP["a"].RequestsPerSec, 200},
		{"summed requests", float64(got.HTTP["a"].Requests), 3000},
		{"summed socket errors", float64(got.HTTP["a"].SocketErrors), 1},
		{"median ns/packet", got.Prog["udp"].NsPerPacket, 20},
		{"summed runs", float64(got.Prog["udp"].Runs["p"]), 10},
		{"median replace", got.ReplaceMs, 2.5},
		{"rounds", float64(got.Rounds), 3},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	if _, ok := got.HTTP["b"]; ok {
		t.Error("merged result invents scenario b")
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr bool
	}{
		{name: "default", mod: func(*Config) {}},
		{name: "quick", mod: func(c *Config) { *c = c.Quick() }},
		{name: "short duration", mod: func(c *Config) { c.Duration = 0 }, wantErr: true},
		{name: "too many rules", mod: func(c *Config) { c.Rules = []int{70000} }, wantErr: true},
		{name: "unsorted", mod: func(c *Config) { c.Rules = []int{10000, 1000} }, wantErr: true},
		{name: "pin root outside bpffs", mod: func(c *Config) { c.PinRoot = "/tmp/x" }, wantErr: true},
		{name: "no rounds", mod: func(c *Config) { c.Rounds = 0 }, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			if err := c.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		in      string
		want    []int
		wantErr bool
	}{
		{in: "1000,10000", want: []int{1000, 10000}},
		{in: "10_000, 1000,1000", want: []int{1000, 10000}},
		{in: "", wantErr: true},
		{in: "many", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRules(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseRules(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if !tc.wantErr && !equalInts(got, tc.want) {
				t.Errorf("ParseRules(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBuildRowsPaired(t *testing.T) {
	merged := MergeRounds(1000, driftRounds())
	oldJSON := merged
	oldJSON.Paired = nil // a report written before pairing existed
	one := MergeRounds(1000, driftRounds()[:1])
	tests := []struct {
		name           string
		size           SizeResult
		wantBA, wantCA float64
		wantMin        float64
		wantMax        float64
		wantPairs      int
	}{
		{name: "median of paired ratios", size: merged, wantBA: 0.97, wantCA: 0.60, wantMin: 0.85, wantMax: 0.99, wantPairs: 3},
		{name: "ratio of medians without paired ratios", size: oldJSON, wantBA: 0.85, wantCA: 0.50},
		{name: "one round", size: one, wantBA: 0.97, wantCA: 0.60, wantMin: 0.97, wantMax: 0.97, wantPairs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rows := BuildRows([]SizeResult{tc.size})
			for _, m := range []string{metricHTTP, metricTCP, metricUDP} {
				r, ok := findRow(rows, m, 1000)
				if !ok || r.BA == nil || !near(*r.BA, tc.wantBA) {
					t.Errorf("%s: b/a = %v, want %v", m, cell(r.BA, "%v"), tc.wantBA)
				}
				if m != metricUDP && (r.CA == nil || !near(*r.CA, tc.wantCA)) {
					t.Errorf("%s: c/a = %v, want %v", m, cell(r.CA, "%v"), tc.wantCA)
				}
				if r.BAPairs != tc.wantPairs {
					t.Errorf("%s: %d pairs, want %d", m, r.BAPairs, tc.wantPairs)
				}
				if tc.wantPairs > 0 && (r.BAMin == nil || r.BAMax == nil || !near(*r.BAMin, tc.wantMin) || !near(*r.BAMax, tc.wantMax)) {
					t.Errorf("%s: b/a range %s–%s, want %v–%v", m, cell(r.BAMin, "%v"), cell(r.BAMax, "%v"), tc.wantMin, tc.wantMax)
				}
			}
			// The a, b, c columns stay the medians of the rates.
			if r, _ := findRow(rows, metricHTTP, 1000); r.A == nil || r.B == nil || !near(*r.B / *r.A, tc.size.HTTP["b"].RequestsPerSec/tc.size.HTTP["a"].RequestsPerSec) {
				t.Errorf("http a, b = %s, %s; want the merged medians", cell(r.A, "%v"), cell(r.B, "%v"))
			}
		})
	}
}

// The goals read b/a from the rows: with drifting rounds the tcp goal
// passes on the paired median (0.97) where the ratio of the medians (0.85)
// would miss it.
func TestEvaluateGoalsPaired(t *testing.T) {
	merged := MergeRounds(10000, driftRounds())
	merged.Rules = 10000
	goals := EvaluateGoals(BuildRows([]SizeResult{merged}), []int{10000})
	want := map[string]float64{
		"tcp short-conn http b/a at 10000 rules": 0.97,
		"tcp throughput b/a at 10000 rules":      0.97,
		"udp 64B pps b/a at 10000 rules":         0.97,
	}
	for _, g := range goals {
		v, ok := want[g.Name]
		if !ok {
			continue
		}
		delete(want, g.Name)
		if g.Status != "PASS" || !near(g.Value, v) {
			t.Errorf("goal %q: %s %.3f, want PASS %.3f", g.Name, g.Status, g.Value, v)
		}
	}
	for name := range want {
		t.Errorf("no goal named %q", name)
	}
}

func TestReportOutputSpread(t *testing.T) {
	tests := []struct {
		name      string
		rounds    []SizeResult
		wantBA    string // b/a column of the http, tcp and udp lines
		wantRange string // b/a range column of those lines
	}{
		// b/a is the paired median 0.970, not the ratio of medians 0.850.
		{name: "three rounds", rounds: driftRounds(), wantBA: "0.970", wantRange: "0.850–0.990 (3)"},
		{name: "one round has no spread", rounds: driftRounds()[:1], wantBA: "0.970", wantRange: "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Host: "test", Rounds: len(tc.rounds), Sizes: []SizeResult{MergeRounds(1000, tc.rounds)}, Notes: standardNotes()}
			r.Finish([]int{1000})
			var buf bytes.Buffer
			r.WriteTable(&buf)
			out := buf.String()
			for _, w := range []string{"b/a range", "medians of per-round paired ratios", "a palindrome, a b c c b a"} {
				if !strings.Contains(out, w) {
					t.Errorf("table lacks %q:\n%s", w, out)
				}
			}
			for _, m := range []string{metricHTTP, metricTCP, metricUDP} {
				// rules a b c b/a c/a range…
				f := tableFields(out, m)
				if len(f) < 7 || f[4] != tc.wantBA || strings.Join(f[6:], " ") != tc.wantRange {
					t.Errorf("%s line %q: want b/a %s and range %q", m, f, tc.wantBA, tc.wantRange)
				}
			}
		})
	}
}

// tableFields returns the fields after the metric name on metric's line
// of the printed table, nil without such a line.
func tableFields(out, metric string) []string {
	for line := range strings.SplitSeq(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), metric); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}
