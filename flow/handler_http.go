package flow

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// httpV2Handler implements Hubble's "httpV2" handler: it counts responses
// and observes their latency. Response flows run from server to client, so
// context labels are taken with source and destination swapped, naming the
// client as source like the request did.
type httpV2Handler struct {
	ctx       *contextOptions
	exemplars bool
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

func newHTTPV2Handler(ctx *contextOptions, opts map[string]string) (handler, []prometheus.Collector) {
	h := &httpV2Handler{ctx: ctx, exemplars: opts[optExemplars] == "true"}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "http_requests_total",
		Help: "Count of HTTP requests",
	}, labelNames(ctx.names(), "method", "protocol", "status", "reporter"))
	h.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Name: "http_request_duration_seconds",
		Help:    "Quantiles of HTTP request duration in seconds",
		Buckets: prometheus.DefBuckets,
	}, labelNames(ctx.names(), "method", "reporter"))
	return h, []prometheus.Collector{h.requests, h.duration}
}

func (h *httpV2Handler) process(f *Flow) {
	if f.L7 == nil || f.L7.HTTP == nil || f.L7.Type != L7Response {
		return
	}
	hp := f.L7.HTTP
	reporter := f.Reporter()
	lv := h.ctx.appendValues(make([]string, 0, 16), f, true)
	n := len(lv)
	counter := h.requests.WithLabelValues(append(lv, hp.Method, hp.Protocol, strconv.FormatUint(uint64(hp.Code), 10), reporter)...)
	observer := h.duration.WithLabelValues(append(lv[:n], hp.Method, reporter)...)
	seconds := f.L7.Latency.Seconds()
	if h.exemplars && f.TraceID != "" {
		ex := prometheus.Labels{"traceID": f.TraceID}
		if a, ok := counter.(prometheus.ExemplarAdder); ok {
			a.AddWithExemplar(1, ex)
		} else {
			counter.Inc()
		}
		if o, ok := observer.(prometheus.ExemplarObserver); ok {
			o.ObserveWithExemplar(seconds, ex)
		} else {
			observer.Observe(seconds)
		}
		return
	}
	counter.Inc()
	observer.Observe(seconds)
}
