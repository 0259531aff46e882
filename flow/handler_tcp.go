package flow

import "github.com/prometheus/client_golang/prometheus"

// tcpHandler implements Hubble's "tcp" handler.
type tcpHandler struct {
	ctx   *contextOptions
	flags *prometheus.CounterVec
}

func newTCPHandler(ctx *contextOptions) (handler, []prometheus.Collector) {
	h := &tcpHandler{ctx: ctx}
	h.flags = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "tcp_flags_total",
		Help: "TCP flag occurrences",
	}, labelNames([]string{"flag", "family"}, ctx.names()...))
	return h, []prometheus.Collector{h.flags}
}

func (h *tcpHandler) process(f *Flow) {
	if !forwarded(f) || f.L4.Protocol != ProtoTCP || f.IPVersion == IPNotUsed || f.L4.TCPFlags == 0 {
		return
	}
	lv := append(make([]string, 0, 16), "", f.IPVersion.String())
	lv = h.ctx.appendValues(lv, f, false)
	fl := f.L4.TCPFlags
	if fl&FIN != 0 {
		lv[0] = "FIN"
		h.flags.WithLabelValues(lv...).Inc()
	}
	if fl&SYN != 0 {
		lv[0] = "SYN"
		if fl&ACK != 0 {
			lv[0] = "SYN-ACK"
		}
		h.flags.WithLabelValues(lv...).Inc()
	}
	if fl&RST != 0 {
		lv[0] = "RST"
		h.flags.WithLabelValues(lv...).Inc()
	}
}
