package main

// metrics.go owns what the bench reads from the agent: its /metrics
// (the proxy's stage histograms and counters, summed over labels) and its
// CPU time from /proc.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Names from dnsproxy/metrics.go.
const (
	metricHold       = "moat_dnsproxy_hold_seconds"
	metricProcessing = "moat_dnsproxy_processing_seconds"
	metricUpstream   = "moat_dnsproxy_upstream_seconds"
	metricRejected   = "moat_dnsproxy_rejected_total"
	metricQueries    = "moat_dnsproxy_queries_total"
	metricEvictions  = "moat_dnsproxy_cache_evictions_total"
	metricCacheIPs   = "moat_dnsproxy_cache_ips"
)

// scrape is one reading of /metrics: each sample keyed by name and its
// label string as printed ("" without labels).
type scrape map[string]map[string]float64

func parseMetrics(r io.Reader) (scrape, error) {
	out := scrape{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		series := line[:sp]
		name, labels := series, ""
		if i := strings.IndexByte(series, '{'); i >= 0 {
			name, labels = series[:i], strings.TrimSuffix(series[i+1:], "}")
		}
		if out[name] == nil {
			out[name] = map[string]float64{}
		}
		out[name][labels] = v
	}
	return out, sc.Err()
}

// label returns the value of label key in a label string.
func label(labels, key string) string {
	for part := range strings.SplitSeq(labels, ",") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == key {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// sum adds the samples of name whose labels include every want pair.
func (s scrape) sum(name string, want map[string]string) float64 {
	var t float64
	for labels, v := range s[name] {
		ok := true
		for k, w := range want {
			if label(labels, k) != w {
				ok = false
				break
			}
		}
		if ok {
			t += v
		}
	}
	return t
}

// histogram is a cumulative histogram summed over labels other than le.
type histogram struct {
	bounds []float64 // upper bounds, ascending, +Inf last
	counts []float64 // cumulative
	sum    float64
	count  float64
}

func (s scrape) histogram(name string) histogram {
	byLE := map[float64]float64{}
	for labels, v := range s[name+"_bucket"] {
		le := label(labels, "le")
		b, err := strconv.ParseFloat(le, 64)
		if err != nil {
			continue
		}
		byLE[b] += v
	}
	var h histogram
	for b := range byLE {
		h.bounds = append(h.bounds, b)
	}
	slices.Sort(h.bounds)
	for _, b := range h.bounds {
		h.counts = append(h.counts, byLE[b])
	}
	h.sum = s.sum(name+"_sum", nil)
	h.count = s.sum(name+"_count", nil)
	return h
}

// sub is h minus an earlier reading of the same histogram.
func (h histogram) sub(before histogram) histogram {
	out := histogram{bounds: h.bounds, counts: slices.Clone(h.counts), sum: h.sum - before.sum, count: h.count - before.count}
	for i, b := range h.bounds {
		if j := slices.Index(before.bounds, b); j >= 0 {
			out.counts[i] -= before.counts[j]
		}
	}
	return out
}

// quantile estimates the q-quantile like PromQL's histogram_quantile:
// linear within the bucket; the last finite bound when it falls in +Inf;
// NaN without observations.
func (h histogram) quantile(q float64) float64 {
	if len(h.counts) == 0 || h.counts[len(h.counts)-1] <= 0 {
		return math.NaN()
	}
	total := h.counts[len(h.counts)-1]
	rank := q * total
	for i, c := range h.counts {
		if c < rank {
			continue
		}
		if math.IsInf(h.bounds[i], 1) {
			if i == 0 {
				return math.NaN()
			}
			return h.bounds[i-1]
		}
		lo, prev := 0.0, 0.0
		if i > 0 {
			lo, prev = h.bounds[i-1], h.counts[i-1]
		}
		if c == prev {
			return h.bounds[i]
		}
		return lo + (h.bounds[i]-lo)*(rank-prev)/(c-prev)
	}
	return h.bounds[len(h.bounds)-1]
}

// scrapeAgent reads the agent's /metrics.
func scrapeAgent(ctx context.Context, addr string) (scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape agent metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape agent metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux architecture the agent runs on).
const clockTicks = 100

// processCPU is a process's user+system time from /proc/<pid>/stat.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process cpu: %w", err)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime and stime (fields 14 and 15) of a stat line;
// the command name (field 2) may contain spaces, so fields count from the
// last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc stat %q: no ')'", tail(stat, 80))
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat: %d fields after the name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc stat utime %q stime %q", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
