package identity

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moatnet/moat/internal/metricslint"
)

// TestMetricsLint runs promlint over the allocator's collector.
func TestMetricsLint(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	a, err := New(Config{Dynamic: dynamic.NewForConfigOrDie(cfg), Kube: kubernetes.NewForConfigOrDie(cfg), Namespace: "x"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.Collector())
	problems, names, err := metricslint.Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != len(metricHelp) {
		t.Errorf("linted %d metrics, want %d: %v", len(names), len(metricHelp), names)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
