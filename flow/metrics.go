package flow

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metricsNamespace prefixes every Hubble-compatible metric.
const metricsNamespace = "hubble"

// Metrics feeds flows to the enabled Hubble-compatible handlers. It is safe
// for concurrent use.
type Metrics struct {
	handlers []handler
}

// handler is one Hubble metrics handler.
type handler interface {
	process(f *Flow)
}

// NewMetrics builds the handlers of cfg and registers their metrics on reg.
func NewMetrics(cfg MetricsConfig, reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{}
	for _, hc := range cfg {
		ctx, err := parseContextOptions(hc.Options)
		if err != nil {
			return nil, fmt.Errorf("configure metrics handler %s: %w", hc.Name, err)
		}
		var h handler
		var cs []prometheus.Collector
		switch hc.Name {
		case HandlerDNS:
			h, cs = newDNSHandler(ctx, hc.Options)
		case HandlerDrop:
			h, cs = newDropHandler(ctx)
		case HandlerTCP:
			h, cs = newTCPHandler(ctx)
		case HandlerFlow:
			h, cs = newFlowHandler(ctx)
		case HandlerPortDistribution:
			h, cs = newPortDistributionHandler(ctx)
		case HandlerICMP:
			h, cs = newICMPHandler(ctx)
		case HandlerHTTPV2:
			h, cs = newHTTPV2Handler(ctx, hc.Options)
		default:
			return nil, fmt.Errorf("configure metrics handler %s: unknown handler", hc.Name)
		}
		for _, c := range cs {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics of handler %s: %w", hc.Name, err)
			}
		}
		m.handlers = append(m.handlers, h)
	}
	return m, nil
}

// Process updates every enabled handler with f.
func (m *Metrics) Process(f Flow) {
	for _, h := range m.handlers {
		h.process(&f)
	}
}

// labelNames is ctx names placed before (pre) and after (post) fixed labels.
func labelNames(pre []string, fixed ...string) []string {
	return append(append(make([]string, 0, len(pre)+len(fixed)), pre...), fixed...)
}

// forwarded reports whether the datapath let f through (Hubble counts TCP
// flags and ports only for those).
func forwarded(f *Flow) bool { return f.Verdict == Forwarded || f.Verdict == Redirected }
