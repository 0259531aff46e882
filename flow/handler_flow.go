package flow

import "github.com/prometheus/client_golang/prometheus"

// flowHandler implements Hubble's "flow" handler.
type flowHandler struct {
	ctx   *contextOptions
	flows *prometheus.CounterVec
}

func newFlowHandler(ctx *contextOptions) (handler, []prometheus.Collector) {
	h := &flowHandler{ctx: ctx}
	h.flows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "flows_processed_total",
		Help: "Total number of flows processed",
	}, labelNames([]string{"protocol", "type", "subtype", "verdict"}, ctx.names()...))
	return h, []prometheus.Collector{h.flows}
}

func (h *flowHandler) process(f *Flow) {
	var subtype string
	switch f.EventType {
	case EventL7:
		if f.L7 != nil {
			switch {
			case f.L7.DNS != nil:
				subtype = "DNS"
			case f.L7.HTTP != nil:
				subtype = "HTTP"
			}
		}
	case EventTrace:
		subtype = f.TraceObservationPoint
	}
	lv := append(make([]string, 0, 16), f.Protocol(), f.EventType.String(), subtype, f.Verdict.String())
	h.flows.WithLabelValues(h.ctx.appendValues(lv, f, false)...).Inc()
}
