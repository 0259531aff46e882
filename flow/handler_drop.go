package flow

import "github.com/prometheus/client_golang/prometheus"

// dropHandler implements Hubble's "drop" handler.
type dropHandler struct {
	ctx   *contextOptions
	drops *prometheus.CounterVec
}

func newDropHandler(ctx *contextOptions) (handler, []prometheus.Collector) {
	h := &dropHandler{ctx: ctx}
	h.drops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "drop_total",
		Help: "Number of drops",
	}, labelNames(ctx.names(), "reason", "protocol"))
	return h, []prometheus.Collector{h.drops}
}

func (h *dropHandler) process(f *Flow) {
	if f.Verdict != Dropped {
		return
	}
	reason := f.DropReason
	if reason == "" {
		reason = DropReasonUnknown
	}
	lv := h.ctx.appendValues(make([]string, 0, 16), f, false)
	h.drops.WithLabelValues(append(lv, string(reason), f.Protocol())...).Inc()
}
