package dnsproxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics.go owns the proxy's own metrics (moat_dnsproxy_*). The Hubble
// DNS metrics (hubble_dns_*) are computed by package flow from the flow
// records the proxy emits, so they are defined once.

// Rejection reasons: the `reason` label of moat_dnsproxy_rejected_total.
const (
	// Query path.
	ReasonShortHeader        = "short_header"         // fewer than 12 bytes: dropped
	ReasonNotQuery           = "not_query"            // QR bit set: dropped
	ReasonMalformed          = "malformed"            // does not parse: FORMERR
	ReasonTruncatedMessage   = "truncated_message"    // ends inside a record: FORMERR
	ReasonCompressionLoop    = "compression_loop"     // FORMERR
	ReasonNameTooLong        = "name_too_long"        // over 255 octets: FORMERR
	ReasonQuestionCount      = "question_count"       // not exactly one question: FORMERR
	ReasonRecordsInQuery     = "records_in_query"     // answer or authority records in a query: FORMERR
	ReasonOpcode             = "opcode"               // not a standard query: NOTIMP
	ReasonInvalidName        = "invalid_name"         // escaped bytes (dots, NULs, …) in a label: REFUSED
	ReasonQclass             = "qclass"               // not IN: REFUSED
	ReasonUnknownQtype       = "unknown_qtype"        // unassigned type: REFUSED
	ReasonQtypeNotAllowed    = "qtype_not_allowed"    // AXFR, IXFR, OPT, TSIG, …: REFUSED
	ReasonUnknownSource      = "unknown_source"       // source is no local endpoint: REFUSED
	ReasonDestinationIsProxy = "destination_is_proxy" // sent to the proxy's own port, not redirected: REFUSED
	ReasonNoRuleSet          = "no_rule_set"          // no DNS rules for the destination: REFUSED
	ReasonPolicyDenied       = "policy_denied"        // REFUSED (or NXDOMAIN)
	ReasonOverload           = "overload"             // over MaxInflight: SERVFAIL
	ReasonOverloadEndpoint   = "overload_endpoint"    // over MaxInflightPerEndpoint: SERVFAIL
	ReasonTooManyTCP         = "tcp_conns"            // over MaxTCPConns: connection closed
	ReasonMarkFailed         = "mark_failed"          // SO_MARK could not be set: SERVFAIL
	ReasonUpstreamTimeout    = "upstream_timeout"     // SERVFAIL
	ReasonUpstreamError      = "upstream_error"       // network error talking upstream: SERVFAIL
	ReasonReplyTooLarge      = "reply_too_large"      // the answer could not be packed: SERVFAIL
	// Response path (upstream packets).
	ReasonRespMalformed   = "response_malformed"         // does not parse: dropped, still waiting
	ReasonRespID          = "response_id_mismatch"       // dropped, still waiting
	ReasonRespSource      = "response_source_mismatch"   // dropped, still waiting
	ReasonRespQuestion    = "response_question_mismatch" // dropped, still waiting
	ReasonRespNotResponse = "response_not_response"      // QR clear: dropped, still waiting
	ReasonRespOutOfChain  = "response_out_of_chain"      // answer record outside the CNAME chain: stripped, never learned
	ReasonHoldTimeout     = "hold_timeout"               // OnLearn past HoldTimeout: answer released anyway
	ReasonLearnError      = "learn_error"                // OnLearn failed: answer released anyway
)

// Results: the `result` label of moat_dnsproxy_rejected_total.
const (
	resultDrop     = "drop"
	resultFormErr  = "formerr"
	resultRefused  = "refused"
	resultNXDomain = "nxdomain"
	resultNotImp   = "notimp"
	resultServFail = "servfail"
	resultStripped = "stripped"
	resultReleased = "released"
)

type metrics struct {
	// Children resolved once, by protocol (policy.ProtoUDP, ProtoTCP).
	allowed    map[string]prometheus.Counter
	upstreamBy map[string]prometheus.Observer
	processBy  map[string]prometheus.Observer

	rejected   *prometheus.CounterVec
	queries    *prometheus.CounterVec
	upstream   *prometheus.HistogramVec
	processing *prometheus.HistogramVec
	hold       prometheus.Histogram
	inflight   prometheus.Gauge
	cacheNames prometheus.Gauge
	cacheIPs   prometheus.Gauge
	evictions  *prometheus.CounterVec
}

// stageBuckets cover 50µs to ~3s: proxy stages are sub-millisecond,
// upstream round trips milliseconds.
var stageBuckets = prometheus.ExponentialBuckets(0.00005, 2, 17)

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsproxy_rejected_total",
			Help: "DNS messages the proxy refused, dropped, failed or altered, by reason and result (formerr, refused, nxdomain, notimp, servfail, drop, stripped, released).",
		}, []string{"reason", "result"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsproxy_queries_total",
			Help: "DNS queries received by the proxy, by transport and verdict (allowed, denied, rejected).",
		}, []string{"protocol", "verdict"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_dnsproxy_upstream_seconds",
			Help:    "Time from forwarding a query to the original server until its answer arrived.",
			Buckets: stageBuckets,
		}, []string{"protocol"}),
		processing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "moat_dnsproxy_processing_seconds",
			Help:    "Time the proxy itself spent on a query (receipt to reply, minus the upstream exchange and the hold).",
			Buckets: stageBuckets,
		}, []string{"protocol"}),
		hold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "moat_dnsproxy_hold_seconds",
			Help:    "Time an answer with selected names was held until its addresses were in the ipcache (bounded by the hold timeout).",
			Buckets: stageBuckets,
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_dnsproxy_inflight_queries",
			Help: "DNS queries being processed.",
		}),
		cacheNames: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_dnsproxy_cache_names",
			Help: "Names in the FQDN cache.",
		}),
		cacheIPs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "moat_dnsproxy_cache_ips",
			Help: "Name-address pairs in the FQDN cache.",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_dnsproxy_cache_evictions_total",
			Help: "Addresses the FQDN cache forgot, by reason (expired, cap, flush).",
		}, []string{"reason"}),
	}
	m.allowed = map[string]prometheus.Counter{}
	m.upstreamBy = map[string]prometheus.Observer{}
	m.processBy = map[string]prometheus.Observer{}
	for _, pn := range []string{"udp", "tcp"} {
		m.allowed[pn] = m.queries.WithLabelValues(pn, "allowed")
		m.upstreamBy[pn] = m.upstream.WithLabelValues(pn)
		m.processBy[pn] = m.processing.WithLabelValues(pn)
	}
	for _, c := range []prometheus.Collector{m.rejected, m.queries, m.upstream, m.processing, m.hold, m.inflight, m.cacheNames, m.cacheIPs, m.evictions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register dnsproxy metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) reject(reason, result string) {
	m.rejected.WithLabelValues(reason, result).Inc()
}

func (m *metrics) cacheSize(names, ips int) {
	m.cacheNames.Set(float64(names))
	m.cacheIPs.Set(float64(ips))
}

func (m *metrics) cacheEvicted(reason string, n int) {
	m.evictions.WithLabelValues(reason).Add(float64(n))
}
