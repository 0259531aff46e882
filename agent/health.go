package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/flow"
)

// TCP health (sockops) and the XDP prefilter: optional datapath pieces that
// the agent opens beside the tc programs, with the same pin root.

// startTCPHealth attaches the sock_ops program and turns its events into
// flows (with the TCP flags Hubble's tcp handler counts) and moat_tcp_*
// metrics. It returns a func that reads events until ctx ends.
func (a *Agent) startTCPHealth(pinRoot string) (func(context.Context) error, func(), error) {
	so, err := datapath.OpenSockOps(datapath.SockOpsConfig{
		PinRoot: pinRoot,
		Cgroup:  a.cfg.TCPHealthCgroup,
		Logger:  a.log.With("component", "sockops"),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open tcp health (sockops): %w", err)
	}
	if err := so.Attach(""); err != nil {
		so.Close()
		return nil, nil, fmt.Errorf("attach tcp health (sockops): %w", err)
	}
	run := func(ctx context.Context) error { return so.ReadEvents(ctx, a.onTCPEvent) }
	return run, func() { so.Close() }, nil
}

func (a *Agent) onTCPEvent(ev datapath.TCPEvent) {
	a.m.tcpEvents.WithLabelValues(ev.Kind.String()).Inc()
	switch ev.Kind {
	case datapath.TCPRTT:
		a.m.tcpRTT.Observe(ev.RTT.Seconds())
		return
	case datapath.TCPRetransmit:
		return
	}
	var flags flow.TCPFlags
	switch ev.Kind {
	case datapath.TCPEstablished:
		flags = flow.SYN
		if !ev.Active {
			flags |= flow.ACK // the local side answered: SYN-ACK
		}
	case datapath.TCPClosed:
		flags = flow.FIN
	case datapath.TCPReset, datapath.TCPRefused:
		flags = flow.RST
	case datapath.TCPSYNTimeout:
		flags = flow.SYN
	default:
		return
	}
	src, dst := ev.Local, ev.Remote
	if !ev.Active {
		src, dst = dst, src
	}
	f := flow.Flow{
		Time:                  ev.Time,
		Verdict:               flow.Forwarded,
		Type:                  flow.TypeL3L4,
		EventType:             flow.EventTrace,
		TraceObservationPoint: "sock-ops",
		IPVersion:             flow.IPv4,
		Reply:                 flow.ReplyUnknown,
		L4: flow.L4{
			Protocol: flow.ProtoTCP, SourcePort: src.Port(), DestinationPort: dst.Port(), TCPFlags: flags,
		},
	}
	if a := src.Addr().Unmap(); a.Is6() {
		f.IPVersion = flow.IPv6
	}
	f.Source = a.endpointInfo(src.Addr(), 0)
	f.Destination = a.endpointInfo(dst.Addr(), 0)
	f.Source.Identity, f.Destination.Identity = a.identityOf(src.Addr()), a.identityOf(dst.Addr())
	a.recordTCP(f)
}

// identityOf returns the identity of an address from the plan in force.
func (a *Agent) identityOf(ip netip.Addr) uint32 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.state.plan == nil {
		return 0
	}
	id, _, _ := a.state.plan.LookupIP(ip.Unmap())
	return uint32(id)
}

// startPrefilter attaches the XDP CIDR deny list to the configured
// interfaces.
func (a *Agent) startPrefilter(pinRoot string) (func(), error) {
	deny := make([]netip.Prefix, 0, len(a.cfg.PrefilterDeny))
	for _, s := range a.cfg.PrefilterDeny {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefilterDeny %q: %w", s, err)
		}
		deny = append(deny, p.Masked())
	}
	pf, err := datapath.OpenPrefilter(datapath.PrefilterConfig{PinRoot: pinRoot, Logger: a.log.With("component", "prefilter")})
	if err != nil {
		return nil, fmt.Errorf("open prefilter: %w", err)
	}
	if err := pf.SetDenyList(deny); err != nil {
		pf.Close()
		return nil, fmt.Errorf("set prefilter deny list: %w", err)
	}
	for _, name := range a.cfg.PrefilterInterfaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			pf.Close()
			return nil, fmt.Errorf("prefilterInterfaces %q: %w", name, err)
		}
		if err := pf.Attach(ifc.Index, datapath.XDPAuto); err != nil {
			pf.Close()
			return nil, fmt.Errorf("attach prefilter to %s: %w", name, err)
		}
	}
	a.reg.MustRegister(&prefilterCollector{pf: pf})
	return func() { pf.Close() }, nil
}

// prefilterCollector exports the XDP drop counters at scrape time.
type prefilterCollector struct{ pf *datapath.Prefilter }

var prefilterDrops = prometheus.NewDesc("moat_prefilter_dropped_packets_total",
	"Packets dropped by the XDP prefilter, by deny-list prefix.", []string{"prefix"}, nil)

func (c *prefilterCollector) Describe(ch chan<- *prometheus.Desc) { ch <- prefilterDrops }

func (c *prefilterCollector) Collect(ch chan<- prometheus.Metric) {
	cs, err := c.pf.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prefilterDrops, err)
		return
	}
	for p, v := range cs.PerPrefix {
		ch <- prometheus.MustNewConstMetric(prefilterDrops, prometheus.CounterValue, float64(v.Packets), p.String())
	}
}

// mapPressureCollector exports moat_bpf_map_pressure at scrape time for the
// maps Sync writes, from the agent's own record (moat_ct's comes from the
// connection-tracking GC, see conntrack.go).
type mapPressureCollector struct {
	dp *datapath.Datapath
	ct *ctCollector
}

var mapPressure = prometheus.NewDesc("moat_bpf_map_pressure",
	"Fill level of a BPF map (entries / max entries); for moat_ct, flows not yet expired / max entries.", []string{"map_name"}, nil)

func (c *mapPressureCollector) Describe(ch chan<- *prometheus.Desc) { ch <- mapPressure }

func (c *mapPressureCollector) Collect(ch chan<- prometheus.Metric) {
	for name, v := range c.dp.MapPressure() {
		ch <- prometheus.MustNewConstMetric(mapPressure, prometheus.GaugeValue, v, name)
	}
	if st, ok := c.ct.latest(); ok {
		ch <- prometheus.MustNewConstMetric(mapPressure, prometheus.GaugeValue, st.Pressure(), "moat_ct")
	}
}
