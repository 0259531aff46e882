package agent

import "github.com/prometheus/client_golang/prometheus"

// agentMetrics are the agent's own metrics (moat_ prefix); flow metrics use
// Hubble's names and live in package flow.
type agentMetrics struct {
	policies              prometheus.Gauge
	policyErrors          prometheus.Gauge
	endpoints             prometheus.Gauge
	reconciles            *prometheus.CounterVec
	reconcileSeconds      prometheus.Histogram
	endpointRegenerations *prometheus.CounterVec
	redirectsFailClosed   *prometheus.CounterVec
	tcpEvents             *prometheus.CounterVec
	tcpRTT                prometheus.Histogram
	fqdnWrites            *prometheus.CounterVec
	dnsReleasesDeferred   prometheus.Counter
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		policies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_policies",
			Help: "Policies in force.",
		}),
		policyErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_policy_errors",
			Help: "Policy or endpoint sources whose latest content failed validation (their previous version stays in force).",
		}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_endpoints",
			Help: "Local endpoints with programs attached.",
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_policy_reconciles_total",
			Help: "Plan reconciliations (endpoints, proxy config, BPF maps) by outcome.",
		}, []string{"outcome"}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_policy_reconcile_duration_seconds",
			Help:    "Time to bring the node in line with a new plan (endpoints and every BPF map; the proxy ACK is not waited for).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		endpointRegenerations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_endpoint_regenerations_total",
			Help: "Endpoint set-ups (netns, veth, program attach) by outcome.",
		}, []string{"outcome"}),
		redirectsFailClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_proxy_redirects_fail_closed_total",
			Help: "Reconciliations whose HTTP redirects stayed without a proxy port (traffic dropped), by reason.",
		}, []string{"reason"}),
		tcpEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_tcp_events_total",
			Help: "TCP health events from the sock_ops program, by kind (syn-timeout, refused, retransmit, reset, established, closed, rtt).",
		}, []string{"kind"}),
		tcpRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_tcp_rtt_seconds",
			Help:    "Sampled TCP round-trip times of sockets on the node.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		fqdnWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_fqdn_ipcache_writes_total",
			Help: "Writes of addresses learned by the DNS proxy into the maps, by path: patch (single ipcache entries of class identities the maps hold) or plan (a new Plan and a full sync).",
		}, []string{"path"}),
		dnsReleasesDeferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "moat_fqdn_releases_deferred_total",
			Help: "Learned addresses the DNS cache forgot that stayed in the ipcache because a tracked connection used them (checked again each second).",
		}),
	}
	reg.MustRegister(m.tcpEvents, m.tcpRTT, m.fqdnWrites, m.dnsReleasesDeferred)
	reg.MustRegister(m.policies, m.policyErrors, m.endpoints, m.reconciles, m.reconcileSeconds,
		m.endpointRegenerations, m.redirectsFailClosed)
	return m
}
