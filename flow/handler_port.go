package flow

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// portDistributionHandler implements Hubble's "port-distribution" handler.
type portDistributionHandler struct {
	ctx   *contextOptions
	ports *prometheus.CounterVec
}

func newPortDistributionHandler(ctx *contextOptions) (handler, []prometheus.Collector) {
	h := &portDistributionHandler{ctx: ctx}
	h.ports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "port_distribution_total",
		Help: "Numbers of packets distributed by destination port",
	}, labelNames([]string{"protocol", "port"}, ctx.names()...))
	return h, []prometheus.Collector{h.ports}
}

func (h *portDistributionHandler) process(f *Flow) {
	// Replies, and flows not known to be requests, would count the client's
	// ephemeral port: skip them, as Hubble does.
	if !forwarded(f) || f.Reply != ReplyNo {
		return
	}
	var port string
	switch f.L4.Protocol {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		port = strconv.Itoa(int(f.L4.DestinationPort))
	case ProtoICMPv4, ProtoICMPv6:
		port = "0"
	default:
		return
	}
	lv := append(make([]string, 0, 16), f.L4.Protocol.String(), port)
	h.ports.WithLabelValues(h.ctx.appendValues(lv, f, false)...).Inc()
}
