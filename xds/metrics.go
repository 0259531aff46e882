package xds

import (
	"fmt"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons for moat_xds_wait_failures_total: every one of them leaves the
// redirect that waited absent (fail closed).
const (
	ReasonNotSubscribed  = "not_subscribed"
	ReasonNACK           = "nack"
	ReasonTimeout        = "timeout"
	ReasonUnknownVersion = "unknown_version"
)

type metrics struct {
	nacks          *prometheus.CounterVec
	acks           *prometheus.CounterVec
	responses      *prometheus.CounterVec
	connectedNodes prometheus.Gauge
	openStreams    prometheus.Gauge
	waitFailures   *prometheus.CounterVec
	waitSeconds    prometheus.Histogram
	snapshots      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_xds_nacks_total",
			Help: "xDS responses rejected by a proxy (NACK), by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_xds_acks_total",
			Help: "xDS responses accepted by a proxy (ACK), by resource type.",
		}, []string{"type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_xds_responses_total",
			Help: "xDS responses sent to proxies, by resource type.",
		}, []string{"type"}),
		connectedNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_xds_connected_nodes",
			Help: "Nodes with at least one open xDS stream.",
		}),
		openStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_xds_open_streams",
			Help: "Open xDS streams (state-of-the-world and delta).",
		}),
		waitFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_xds_wait_failures_total",
			Help: "Waits for a proxy ACK that failed, leaving the redirect absent (fail closed), by reason.",
		}, []string{"reason"}),
		waitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_xds_ack_wait_seconds",
			Help:    "Time spent waiting for a proxy to ACK a version, whatever the outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_xds_snapshots_total",
			Help: "Snapshots set for nodes.",
		}),
	}
	for _, c := range []prometheus.Collector{m.nacks, m.acks, m.responses, m.connectedNodes, m.openStreams, m.waitFailures, m.waitSeconds, m.snapshots} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register xds metrics: %w", err)
		}
	}
	for _, r := range []string{ReasonNotSubscribed, ReasonNACK, ReasonTimeout, ReasonUnknownVersion} {
		m.waitFailures.WithLabelValues(r)
	}
	return m, nil
}

// typeLabel turns a type URL into a short metric label ("listener").
func typeLabel(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "listener"
	case resource.ClusterType:
		return "cluster"
	case resource.RouteType:
		return "route"
	case resource.ScopedRouteType:
		return "scoped_route"
	case resource.VirtualHostType:
		return "virtual_host"
	case resource.EndpointType:
		return "endpoint"
	case resource.SecretType:
		return "secret"
	case resource.RuntimeType:
		return "runtime"
	case resource.ExtensionConfigType:
		return "extension_config"
	}
	if i := strings.LastIndexByte(typeURL, '.'); i >= 0 && i+1 < len(typeURL) {
		return strings.ToLower(typeURL[i+1:])
	}
	return "unknown"
}
