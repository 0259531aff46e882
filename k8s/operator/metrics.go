package operator

// This file owns the moat_operator_* metrics.

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leader          prometheus.Gauge
	identities      prometheus.Gauge
	markedUnused    prometheus.Gauge
	gcDeleted       prometheus.Counter
	policies        *prometheus.GaugeVec
	reconcileErrors *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_operator_leader", Help: "1 while this replica holds the leader-election lease, else 0.",
		}),
		identities: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_operator_identities", Help: "Identity objects in the cluster, as of the last GC pass (leader only).",
		}),
		markedUnused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_operator_identities_unused", Help: "Identities marked unused and waiting for the grace period, as of the last GC pass.",
		}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_operator_identities_gc_total", Help: "Unused identities deleted by the garbage collector.",
		}),
		policies: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moat_operator_policies", Help: "moat.io policies by validity, as of the last status reconcile.",
		}, []string{"valid"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_operator_reconcile_errors_total", Help: "Failed reconciles by controller (identity-gc, policy-status).",
		}, []string{"controller"}),
	}
	for _, c := range []prometheus.Collector{m.leader, m.identities, m.markedUnused, m.gcDeleted, m.policies, m.reconcileErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, v := range []string{"true", "false"} {
		m.policies.WithLabelValues(v)
	}
	for _, c := range []string{"identity-gc", "policy-status"} {
		m.reconcileErrors.WithLabelValues(c)
	}
	return m, nil
}
