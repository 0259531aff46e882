package main

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"testing"
)

// round builds one round's result: rates for a, and b and c as given
// fractions of a (a zero fraction leaves the scenario out).
func round(a, b, c float64) SizeResult {
	r := newSizeResult(1000)
	r.HTTP["a"] = WrkResult{RequestsPerSec: a}
	r.TCP["a"] = IperfResult{BitsPerSecond: a * 1e6}
	r.UDP["a"] = IperfResult{PacketsPerSecond: a * 100}
	if b > 0 {
		r.HTTP["b"] = WrkResult{RequestsPerSec: a * b}
		r.TCP["b"] = IperfResult{BitsPerSecond: a * 1e6 * b}
		r.UDP["b"] = IperfResult{PacketsPerSecond: a * 100 * b}
	}
	if c > 0 {
		r.HTTP["c"] = WrkResult{RequestsPerSec: a * c}
		r.TCP["c"] = IperfResult{BitsPerSecond: a * 1e6 * c}
	}
	return r
}

// driftRounds drift upwards in a (the machine got faster) while b/a and c/a
// jump around: the ratio of the medians (b 1020 / a 1200 = 0.85, c 600 /
// a 1200 = 0.50) is not the median of the rounds' own ratios (0.97, 0.60).
func driftRounds() []SizeResult {
	return []SizeResult{round(1000, 0.97, 0.60), round(1200, 0.85, 0.40), round(1400, 0.99, 0.70)}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func nearAll(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !near(a[i], b[i]) {
			return false
		}
	}
	return true
}

func TestPairedRatios(t *testing.T) {
	partial := newSizeResult(1000) // interrupted round: only a measured
	partial.HTTP["a"] = WrkResult{RequestsPerSec: 5000}
	zero := round(1000, 0.5, 0.5)
	zero.TCP["a"] = IperfResult{} // a failed to move data: no ratio
	tests := []struct {
		name   string
		rounds []SizeResult
		want   map[string][]float64
	}{
		{
			name:   "every round paired, in order",
			rounds: driftRounds(),
			want: map[string][]float64{
				"http/b/a": {0.97, 0.85, 0.99}, "http/c/a": {0.60, 0.40, 0.70},
				"tcp/b/a": {0.97, 0.85, 0.99}, "tcp/c/a": {0.60, 0.40, 0.70},
				"udp/b/a": {0.97, 0.85, 0.99},
			},
		},
		{
			name:   "round without b or c left out",
			rounds: []SizeResult{round(1000, 0.9, 0.8), partial, round(1000, 0.7, 0)},
			want: map[string][]float64{
				"http/b/a": {0.9, 0.7}, "http/c/a": {0.8},
				"tcp/b/a": {0.9, 0.7}, "tcp/c/a": {0.8},
				"udp/b/a": {0.9, 0.7},
			},
		},
		{
			name:   "zero a left out",
			rounds: []SizeResult{zero},
			want:   map[string][]float64{"http/b/a": {0.5}, "http/c/a": {0.5}, "udp/b/a": {0.5}},
		},
		{name: "no rounds", want: map[string][]float64{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pairedRatios(tc.rounds)
			if len(got) != len(tc.want) {
				t.Errorf("got keys %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(tc.want)))
			}
			for k, want := range tc.want {
				if !nearAll(got[k], want) {
					t.Errorf("%s = %v, want %v", k, got[k], want)
				}
			}
		})
	}
}

func TestMergeRoundsPaired(t *testing.T) {
	got := MergeRounds(1000, driftRounds())
	// The rates stay medians of the rates.
	if a, b := got.HTTP["a"].RequestsPerSec, got.HTTP["b"].RequestsPerSec; !near(a, 1200) || !near(b, 1020) {
		t.Errorf("median http a, b = %v, %v; want 1200, 1020", a, b)
	}
	if !nearAll(got.Paired["http/b/a"], []float64{0.97, 0.85, 0.99}) {
		t.Errorf("paired http/b/a = %v", got.Paired["http/b/a"])
	}
	if !nearAll(got.Raw["http/a"], []float64{1000, 1200, 1400}) {
		t.Errorf("raw http/a = %v", got.Raw["http/a"])
	}

	// Paired ratios survive the JSON report, so a report read back builds
	// the same rows.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	var back SizeResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !nearAll(back.Paired["udp/b/a"], got.Paired["udp/b/a"]) {
		t.Errorf("paired udp/b/a after JSON = %v, want %v", back.Paired["udp/b/a"], got.Paired["udp/b/a"])
	}
}

func TestPalindrome(t *testing.T) {
	if got := palindrome([]string{"a", "b", "c"}); !slices.Equal(got, []string{"a", "b", "c", "c", "b", "a"}) {
		t.Fatalf("palindrome(a b c) = %v", got)
	}
	if got := palindrome([]string{"a", "b"}); !slices.Equal(got, []string{"a", "b", "b", "a"}) {
		t.Fatalf("palindrome(a b) = %v", got)
	}
}

// A round's two runs per scenario average into one value per scenario, and
// a drift that is linear over the palindrome cancels out of b/a.
func TestRunsAverageOverPalindrome(t *testing.T) {
	runs := newSizeResult(10)
	// a b c c b a with throughput drifting up by 100 per slot and b 10 %
	// slower than a at the same moment.
	base := []float64{1000, 1100, 1200, 1300, 1400, 1500}
	for i, sc := range palindrome([]string{"a", "b", "c"}) {
		v := base[i]
		if sc == "b" {
			v *= 0.9
		}
		one := newSizeResult(10)
		one.HTTP[sc] = WrkResult{RequestsPerSec: v, Requests: 1}
		one.TCP[sc] = IperfResult{BitsPerSecond: v}
		runs.addRun(one)
	}
	cur := newSizeResult(10)
	cur.addMean(runs, 2)
	a, b := cur.HTTP["a"].RequestsPerSec, cur.HTTP["b"].RequestsPerSec
	if a != 1250 || math.Abs(b/a-0.9) > 1e-9 {
		t.Fatalf("a = %v, b/a = %v; want 1250 and 0.9 exactly", a, b/a)
	}
	if cur.HTTP["c"].Requests != 2 {
		t.Fatalf("requests of c = %d, want the sum of both runs (2)", cur.HTTP["c"].Requests)
	}
	if got := cur.TCP["b"].BitsPerSecond / cur.TCP["a"].BitsPerSecond; math.Abs(got-0.9) > 1e-9 {
		t.Fatalf("tcp b/a = %v, want 0.9", got)
	}
}
