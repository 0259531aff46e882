package l7proxy

import (
	"testing"

	"github.com/moatnet/moat/internal/metricslint"
)

// envoyCompatCounters are the Envoy-compatible counters of /stats/prometheus:
// they keep Envoy's own names, which have no _total suffix (Envoy's
// Prometheus output is what `moat envoy stats` and dashboards read), so
// promlint's _total rule is waived for them, and only for them.
var envoyCompatCounters = map[string]bool{
	"envoy_http_downstream_rq_xx": true, "envoy_http_downstream_rq_total": true,
	"envoy_http_rbac_allowed": true, "envoy_http_rbac_denied": true,
	"envoy_listener_downstream_cx_total": true,
	"envoy_listener_manager_lds_update":  true, "envoy_cluster_manager_cds_update": true,
}

// TestEnvoyStatsLint runs promlint over the Envoy-compatible stats registry
// the admin endpoint serves, with samples in every vector.
func TestEnvoyStatsLint(t *testing.T) {
	s := newEnvoyStats()
	s.request("ingress_http", 200)
	s.rbacAllow.WithLabelValues("ingress_http").Inc()
	s.rbacDeny.WithLabelValues("ingress_http").Inc()
	s.cxActive.WithLabelValues("127.0.0.1_1").Set(1)
	s.cxTotal.WithLabelValues("127.0.0.1_1").Inc()
	s.lds.WithLabelValues("update_success").Inc()
	s.cds.WithLabelValues("update_success").Inc()
	problems, names, err := metricslint.Lint(s.reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 8 {
		t.Errorf("linted %d metrics, want 8: %v", len(names), names)
	}
	for _, p := range problems {
		if envoyCompatCounters[p.Metric] && p.Text == `counter metrics should have "_total" suffix` {
			continue
		}
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}
