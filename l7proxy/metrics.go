package l7proxy

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's own metrics, on the agent's registry.
type metrics struct {
	xdsUpdates       *prometheus.CounterVec // type, result
	xdsConnected     prometheus.Gauge
	accessLogDropped *prometheus.CounterVec // reason
	connsRejected    *prometheus.CounterVec // listener, reason
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		xdsUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_l7proxy_xds_updates_total",
			Help: "xDS responses handled by the embedded proxy, by resource type and result (ack, nack).",
		}, []string{"type", "result"}),
		xdsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_l7proxy_xds_connected",
			Help: "1 while the embedded proxy has an open ADS stream.",
		}),
		accessLogDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_l7proxy_access_log_dropped_total",
			Help: "Access-log entries the embedded proxy dropped, by reason.",
		}, []string{"reason"}),
		connsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_l7proxy_connections_rejected_total",
			Help: "Downstream connections closed before HTTP, by listener and reason (no_filter_chain, no_listener).",
		}, []string{"listener", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.xdsUpdates, m.xdsConnected, m.accessLogDropped, m.connsRejected} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register l7proxy metrics: %w", err)
		}
	}
	return m, nil
}

// envoyStats imitates the few Envoy statistics `moat envoy` and dashboards
// read, served on the admin interface's /stats/prometheus with Envoy's
// names and tag labels.
type envoyStats struct {
	reg       *prometheus.Registry
	rq        *prometheus.CounterVec // envoy_http_downstream_rq_xx
	rqTotal   *prometheus.CounterVec // envoy_http_downstream_rq_total
	rbacAllow *prometheus.CounterVec
	rbacDeny  *prometheus.CounterVec
	cxActive  *prometheus.GaugeVec
	cxTotal   *prometheus.CounterVec
	lds, cds  *prometheus.CounterVec // update_success / update_rejected
}

const hcmLabel = "envoy_http_conn_manager_prefix"

func newEnvoyStats() *envoyStats {
	s := &envoyStats{
		reg: prometheus.NewRegistry(),
		rq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_http_downstream_rq_xx", Help: "Downstream responses by code class.",
		}, []string{"envoy_response_code_class", hcmLabel}),
		rqTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_http_downstream_rq_total", Help: "Downstream requests.",
		}, []string{hcmLabel}),
		rbacAllow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_http_rbac_allowed", Help: "Requests the RBAC filter allowed.",
		}, []string{hcmLabel}),
		rbacDeny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_http_rbac_denied", Help: "Requests the RBAC filter denied.",
		}, []string{hcmLabel}),
		cxActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "envoy_listener_downstream_cx_active", Help: "Open downstream connections.",
		}, []string{"envoy_listener_address"}),
		cxTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_listener_downstream_cx_total", Help: "Accepted downstream connections.",
		}, []string{"envoy_listener_address"}),
		lds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_listener_manager_lds_update", Help: "LDS updates by result.",
		}, []string{"result"}),
		cds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_manager_cds_update", Help: "CDS updates by result.",
		}, []string{"result"}),
	}
	s.reg.MustRegister(s.rq, s.rqTotal, s.rbacAllow, s.rbacDeny, s.cxActive, s.cxTotal, s.lds, s.cds)
	return s
}

func (s *envoyStats) request(prefix string, status int) {
	s.rqTotal.WithLabelValues(prefix).Inc()
	s.rq.WithLabelValues(strconv.Itoa(status/100), prefix).Inc()
}

func (s *envoyStats) rbac(prefix string, allowed bool) {
	if allowed {
		s.rbacAllow.WithLabelValues(prefix).Inc()
	} else {
		s.rbacDeny.WithLabelValues(prefix).Inc()
	}
}
