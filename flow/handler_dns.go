package flow

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// dnsHandler implements Hubble's "dns" handler.
type dnsHandler struct {
	ctx           *contextOptions
	includeQuery  bool
	ignoreAAAA    bool
	queries       *prometheus.CounterVec
	responses     *prometheus.CounterVec
	responseTypes *prometheus.CounterVec
}

// rcodePolicyDenied is the rcode label of a query the DNS proxy refused by policy.
const rcodePolicyDenied = "Policy denied"

func newDNSHandler(ctx *contextOptions, opts map[string]string) (handler, []prometheus.Collector) {
	h := &dnsHandler{ctx: ctx}
	_, h.includeQuery = opts[optQuery]
	_, h.ignoreAAAA = opts[optIgnoreAAAA]
	qr := labelNames(ctx.names(), "rcode", "qtypes", "ips_returned")
	rt := labelNames(ctx.names(), "type", "qtypes")
	if h.includeQuery {
		qr = append(qr, "query")
		rt = append(rt, "query")
	}
	h.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "dns_queries_total",
		Help: "Number of DNS queries observed",
	}, qr)
	h.responses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "dns_responses_total",
		Help: "Number of DNS responses observed",
	}, qr)
	h.responseTypes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Name: "dns_response_types_total",
		Help: "Number of DNS response records observed, by record type",
	}, rt)
	return h, []prometheus.Collector{h.queries, h.responses, h.responseTypes}
}

func (h *dnsHandler) process(f *Flow) {
	if f.L7 == nil || f.L7.DNS == nil {
		return
	}
	d := f.L7.DNS
	if h.ignoreAAAA && len(d.Qtypes) == 1 && d.Qtypes[0] == "AAAA" {
		return
	}
	qtypes := strings.Join(d.Qtypes, ",")
	ips := strconv.Itoa(len(d.IPs))
	lv := h.ctx.appendValues(make([]string, 0, 16), f, false)
	n := len(lv)
	switch {
	case f.Verdict == Dropped:
		lv = append(lv, rcodePolicyDenied, qtypes, ips)
		h.queries.WithLabelValues(h.withQuery(lv, d)...).Inc()
	case f.Reply != ReplyYes:
		lv = append(lv, "", qtypes, ips)
		h.queries.WithLabelValues(h.withQuery(lv, d)...).Inc()
	default:
		lv = append(lv, rcodeName(d.Rcode), qtypes, ips)
		h.responses.WithLabelValues(h.withQuery(lv, d)...).Inc()
		for _, rr := range d.Rrtypes {
			lv = append(lv[:n], rr, qtypes)
			h.responseTypes.WithLabelValues(h.withQuery(lv, d)...).Inc()
		}
	}
}

func (h *dnsHandler) withQuery(lv []string, d *DNS) []string {
	if h.includeQuery {
		return append(lv, d.Query)
	}
	return lv
}

// rcodeName is the label value Hubble uses for a DNS response code.
func rcodeName(rcode uint32) string {
	switch rcode {
	case 0:
		return "No Error"
	case 1:
		return "Format Error"
	case 2:
		return "Server Failure"
	case 3:
		return "Non-Existent Domain"
	case 4:
		return "Not Implemented"
	case 5:
		return "Query Refused"
	case 6:
		return "Name Exists when it should not"
	case 7:
		return "RR Set Exists when it should not"
	case 8:
		return "RR Set that should exist does not"
	case 9:
		return "Not Authorized"
	case 10:
		return "Name not contained in zone"
	case 11:
		return "DSO-TYPE Not Implemented"
	case 16:
		return "Bad OPT Version"
	case 17:
		return "Key not recognized"
	case 18:
		return "Signature out of time window"
	case 19:
		return "Bad TKEY Mode"
	case 20:
		return "Duplicate key name"
	case 21:
		return "Algorithm not supported"
	case 22:
		return "Bad Truncation"
	case 23:
		return "Bad/missing Server Cookie"
	}
	return ""
}
