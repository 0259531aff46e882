package flow

import "github.com/prometheus/client_golang/prometheus"

// icmpHandler implements Hubble's "icmp" handler.
type icmpHandler struct {
	ctx  *contextOptions
	icmp *prometheus.CounterVec
}

func newICMPHandler(ctx *contextOptions) (handler, []prometheus.Collector) {
	h := &icmpHandler{ctx: ctx}
	h.icmp = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "icmp_total",
		Help: "Number of ICMP messages",
	}, labelNames([]string{"family", "type"}, ctx.names()...))
	return h, []prometheus.Collector{h.icmp}
}

func (h *icmpHandler) process(f *Flow) {
	var family, typ string
	switch f.L4.Protocol {
	case ProtoICMPv4:
		family, typ = "IPv4", icmpv4TypeName(f.L4.ICMPType, f.L4.ICMPCode)
	case ProtoICMPv6:
		family, typ = "IPv6", icmpv6TypeName(f.L4.ICMPType, f.L4.ICMPCode)
	default:
		return
	}
	lv := append(make([]string, 0, 16), family, typ)
	h.icmp.WithLabelValues(h.ctx.appendValues(lv, f, false)...).Inc()
}
