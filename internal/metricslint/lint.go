package metricslint

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// Registry is what Lint reads: *prometheus.Registry fits.
type Registry interface {
	prometheus.Gatherer
	Describe(chan<- *prometheus.Desc)
}

var (
	fqNameRE = regexp.MustCompile(`fqName: "([^"]*)"`)
	helpRE   = regexp.MustCompile(`help: "((?:[^"\\]|\\.)*)"`)
	labelsRE = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
)

// Lint returns promlint's problems for every metric reg describes. Gathered
// families are linted as they are; a described metric that has no sample
// yet is linted by name, help and labels (typed by its name). names lists
// every metric name seen, sorted, so that a caller can check the lint
// covered what it meant to.
func Lint(reg Registry) (problems []promlint.Problem, names []string, err error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, nil, fmt.Errorf("gather: %w", err)
	}
	have := map[string]bool{}
	for _, mf := range mfs {
		have[mf.GetName()] = true
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		reg.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		s := d.String()
		m := fqNameRE.FindStringSubmatch(s)
		if m == nil {
			return nil, nil, fmt.Errorf("read descriptor %s: no fqName", s)
		}
		name := m[1]
		if have[name] {
			continue
		}
		have[name] = true
		help := ""
		if h := helpRE.FindStringSubmatch(s); h != nil {
			help = h[1]
		}
		var labels []*dto.LabelPair
		if l := labelsRE.FindStringSubmatch(s); l != nil && strings.TrimSpace(l[1]) != "" {
			for _, ln := range strings.Split(l[1], ",") {
				labels = append(labels, &dto.LabelPair{Name: ptr(strings.TrimSpace(ln)), Value: ptr("x")})
			}
		}
		// A descriptor does not say its type: a name ending in _total
		// is taken for a counter, anything else for a gauge (so a gauge
		// named *_count or a counter's missing _total once it has a
		// sample are both caught).
		mf := &dto.MetricFamily{Name: ptr(name), Help: ptr(help), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Label: labels, Gauge: &dto.Gauge{Value: ptr(0.0)}}}}
		if strings.HasSuffix(name, "_total") {
			mf.Type = dto.MetricType_COUNTER.Enum()
			mf.Metric = []*dto.Metric{{Label: labels, Counter: &dto.Counter{Value: ptr(0.0)}}}
		}
		mfs = append(mfs, mf)
	}
	for n := range have {
		names = append(names, n)
	}
	sort.Strings(names)
	problems, err = promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		return nil, nil, fmt.Errorf("lint: %w", err)
	}
	return problems, names, nil
}

func ptr[T any](v T) *T { return &v }
