package e2e

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sample is one sample of a scrape.
type sample struct {
	name   string
	labels map[string]string
	order  []string // label names in exposition order
	value  float64
}

// metricSet is a scrape.
type metricSet []sample

// parseMetrics reads the Prometheus text exposition format with expfmt
// (the parser Prometheus itself uses): counters, gauges and untyped
// samples as they are; a histogram as its _bucket (with le), _sum and
// _count samples; a summary as its quantiles, _sum and _count.
func parseMetrics(r io.Reader) (metricSet, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	var out metricSet
	for _, n := range names {
		for _, m := range fams[n].GetMetric() {
			base := sample{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				base.labels[lp.GetName()] = lp.GetValue()
				base.order = append(base.order, lp.GetName())
			}
			add := func(suffix string, v float64, extra ...string) {
				s := sample{name: n + suffix, labels: maps.Clone(base.labels), order: slices.Clone(base.order), value: v}
				for i := 0; i+1 < len(extra); i += 2 {
					s.labels[extra[i]] = extra[i+1]
					s.order = append(s.order, extra[i])
				}
				out = append(out, s)
			}
			switch {
			case m.Counter != nil:
				add("", m.Counter.GetValue())
			case m.Gauge != nil:
				add("", m.Gauge.GetValue())
			case m.Untyped != nil:
				add("", m.Untyped.GetValue())
			case m.Histogram != nil:
				h := m.Histogram
				for _, b := range h.GetBucket() {
					add("_bucket", float64(b.GetCumulativeCount()), "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))
				}
				add("_sum", h.GetSampleSum())
				add("_count", float64(h.GetSampleCount()))
			case m.Summary != nil:
				sm := m.Summary
				for _, q := range sm.GetQuantile() {
					add("", q.GetValue(), "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64))
				}
				add("_sum", sm.GetSampleSum())
				add("_count", float64(sm.GetSampleCount()))
			}
		}
	}
	return out, nil
}

// sum adds the values of every sample named name whose labels include want;
// found is false when there is none.
func (m metricSet) sum(name string, want map[string]string) (total float64, found bool) {
	for _, s := range m {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			total += s.value
			found = true
		}
	}
	return total, found
}

// has reports whether any sample is named name.
func (m metricSet) has(name string) bool {
	for _, s := range m {
		if s.name == name {
			return true
		}
	}
	return false
}
