package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/internal/metricslint"
	"github.com/moatnet/moat/l7proxy"
)

// TestMetricsLint runs promlint over the agent's whole registry as New
// builds it (agent, flow/Hubble handlers, xDS server) plus what each proxy
// mode registers on it (the embedded l7proxy, the Envoy supervisor), so a
// name that promlint rejects fails CI even before its first sample.
func TestMetricsLint(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		Policies:  filepath.Join(dir, "policies"),
		Endpoints: filepath.Join(dir, "endpoints.yaml"),
		RunDir:    filepath.Join(dir, "run"),
		Metrics: []string{
			"dns:query;ignoreAAAA", "drop", "tcp", "flow", "port-distribution", "icmp",
			"httpV2:exemplars=true;labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction",
		},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg, log)
	if err != nil {
		t.Fatalf("new agent: %v", err)
	}
	if _, err := l7proxy.New(l7proxy.Config{
		Node: "lint", XDSTarget: filepath.Join(dir, "xds.sock"), AccessLogTarget: filepath.Join(dir, "als.sock"),
		AdminAddr: filepath.Join(dir, "admin.sock"),
	}, log, a.reg); err != nil {
		t.Fatalf("new l7proxy: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envoy.NewSupervisor(envoy.SupervisorConfig{
		Binary: self, BootstrapPath: filepath.Join(dir, "bootstrap.json"), Logger: log, Registerer: a.reg,
	}); err != nil {
		t.Fatalf("new envoy supervisor: %v", err)
	}
	problems, names, err := metricslint.Lint(a.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// The lint must have seen every part of the registry.
	for _, want := range []string{
		"moat_policies", "moat_endpoints", "moat_policy_errors", // agent
		"hubble_drop_total", "hubble_http_request_duration_seconds", "hubble_dns_queries_total", // flow
		"moat_xds_acks_total",            // xds
		"moat_l7proxy_xds_updates_total", // l7proxy
		"moat_envoy_restarts_total",      // envoy supervisor
		"go_goroutines",                  // runtime collectors
	} {
		if !slices.Contains(names, want) {
			t.Errorf("lint did not see %s (saw %v)", want, names)
		}
	}
}

// TestCNIMetricsLint: moat-cni's metrics (registered in Kubernetes mode
// with cni: true) pass promlint too.
func TestCNIMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := &cniServer{atts: map[string]*cniAttachment{}}
	m := newCNIMetrics(reg, c)
	m.observe("add", false, time.Now())
	problems, names, err := metricslint.Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{"moat_cni_requests_total", "moat_cni_add_duration_seconds", "moat_cni_attachments"} {
		if !slices.Contains(names, want) {
			t.Errorf("lint did not see %s (saw %v)", want, names)
		}
	}
}
