package metricslint

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestLintSeesEmptyVectors: a bad name on a vector with no child yet is
// reported, and a counter without _total once it has a sample.
func TestLintSeesEmptyVectors(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moat_thing_count", Help: "h"}, []string{"a"}),
		prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_events", Help: "h"}),
		prometheus.NewGauge(prometheus.GaugeOpts{Name: "moat_things", Help: "h"}),
	)
	problems, names, err := Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"moat_events", "moat_thing_count", "moat_things"}) {
		t.Fatalf("names %v", names)
	}
	got := map[string]string{}
	for _, p := range problems {
		got[p.Metric] += p.Text
	}
	if len(got) != 2 || !strings.Contains(got["moat_thing_count"], `"_count" suffix`) || !strings.Contains(got["moat_events"], `"_total" suffix`) {
		t.Fatalf("problems %+v", problems)
	}
}
