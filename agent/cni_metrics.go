package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cniMetrics count moat-cni's requests (registered when Config.CNI).
type cniMetrics struct {
	requests   *prometheus.CounterVec
	addSeconds prometheus.Histogram
	attached   prometheus.GaugeFunc
}

func newCNIMetrics(reg prometheus.Registerer, c *cniServer) *cniMetrics {
	m := &cniMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_cni_requests_total",
			Help: "moat-cni requests by verb (add, del, check, gc, status) and outcome (success, failure).",
		}, []string{"verb", "outcome"}),
		addSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_cni_add_duration_seconds",
			Help:    "Time from a CNI ADD request to its answer (pod in the cache, address, veth, programs and maps in place).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		attached: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "moat_cni_attachments",
			Help: "CNI attachments (pod sandboxes) the agent holds.",
		}, func() float64 {
			c.mu.RLock()
			defer c.mu.RUnlock()
			return float64(len(c.atts))
		}),
	}
	reg.MustRegister(m.requests, m.addSeconds, m.attached)
	return m
}

// observe counts one request; start is zero except for ADD.
func (m *cniMetrics) observe(verb string, failed bool, start time.Time) {
	outcome := "success"
	if failed {
		outcome = "failure"
	}
	m.requests.WithLabelValues(verb, outcome).Inc()
	if !start.IsZero() && !failed {
		m.addSeconds.Observe(time.Since(start).Seconds())
	}
}
