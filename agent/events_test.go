package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

func TestEventFlow(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "n1"}}
	a.state.enricher = map[string]flow.Endpoint{
		"10.1.0.1": {Namespace: "default", PodName: "client", Identity: 300},
		"10.1.0.2": {Namespace: "default", PodName: "server", Identity: 301},
	}
	ev := datapath.Event{
		Time: time.Unix(100, 0), Kind: datapath.EventDrop, Reason: datapath.DropPolicyDenied,
		Direction: policy.Ingress, SrcIdentity: 300, DstIdentity: 301,
		Src: netip.MustParseAddrPort("10.1.0.1:40000"), Dst: netip.MustParseAddrPort("10.1.0.2:80"),
		Proto: policy.ProtoTCP, PolicyPort: 80, TCPFlags: 0x02,
	}
	f := a.eventFlow(ev)
	if f.Verdict != flow.Dropped || f.DropReason != flow.DropPolicyDenied || f.EventType != flow.EventDrop {
		t.Fatalf("verdict %v reason %v type %v", f.Verdict, f.DropReason, f.EventType)
	}
	if f.Source.PodName != "client" || f.Destination.PodName != "server" || f.Source.Identity != 300 {
		t.Fatalf("endpoints %+v -> %+v", f.Source, f.Destination)
	}
	if f.L4.Protocol != flow.ProtoTCP || f.L4.DestinationPort != 80 || f.L4.TCPFlags != flow.SYN {
		t.Fatalf("l4 %+v", f.L4)
	}
	if f.TrafficDirection != flow.Ingress || f.NodeName != "n1" {
		t.Fatalf("direction %v node %q", f.TrafficDirection, f.NodeName)
	}

	icmp := ev
	icmp.Kind, icmp.Proto, icmp.PolicyPort, icmp.Direction = datapath.EventVerdict, policy.ProtoICMP, 8, policy.Egress
	icmp.Verdict = policy.VerdictAllow
	f = a.eventFlow(icmp)
	if f.Verdict != flow.Forwarded || f.L4.Protocol != flow.ProtoICMPv4 || f.L4.ICMPType != 8 || f.TrafficDirection != flow.Egress {
		t.Fatalf("icmp flow %+v", f)
	}

	proxy := ev
	proxy.Kind, proxy.Reason = datapath.EventDrop, datapath.DropProxyUnavailable
	if f = a.eventFlow(proxy); f.DropReason != flow.DropProxyUnavailable {
		t.Fatalf("proxy drop reason %v", f.DropReason)
	}
}

func TestParseFlowQuery(t *testing.T) {
	flt, last, follow, err := ParseFlowQuery(url.Values{
		"verdict": {"dropped,FORWARDED"}, "pod": {"default/web"}, "port": {"80"}, "last": {"5"}, "follow": {"true"}, "l7": {"http"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(flt.Verdicts) != 2 || flt.Pod != "default/web" || flt.Port != 80 || last != 5 || !follow || flt.L7 != "http" {
		t.Fatalf("filter %+v last %d follow %v", flt, last, follow)
	}
	for q, want := range map[string]string{
		"verdict=NOPE": "verdict", "port=70000": "port", "last=-1": "last", "follow=maybe": "follow", "l7=kafka": "l7",
	} {
		v, _ := url.ParseQuery(q)
		if _, _, _, err := ParseFlowQuery(v); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want mention of %q", q, err, want)
		}
	}
}

func TestTCPEventFlows(t *testing.T) {
	reg := prometheus.NewRegistry()
	mcfg, err := flow.ParseMetricsList([]string{"tcp"})
	if err != nil {
		t.Fatal(err)
	}
	fm, err := flow.NewMetrics(mcfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := flow.NewRing(flow.RingConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{NodeName: "n1"}, m: newAgentMetrics(reg), ring: ring, flows: fm}
	local := netip.MustParseAddrPort("10.1.0.1:40000")
	remote := netip.MustParseAddrPort("10.1.0.2:80")
	for _, ev := range []datapath.TCPEvent{
		{Kind: datapath.TCPEstablished, Active: true, Local: local, Remote: remote},
		{Kind: datapath.TCPEstablished, Active: false, Local: remote, Remote: local},
		{Kind: datapath.TCPClosed, Active: true, Local: local, Remote: remote},
		{Kind: datapath.TCPReset, Active: true, Local: local, Remote: remote},
		{Kind: datapath.TCPRTT, Active: true, Local: local, Remote: remote, RTT: time.Millisecond},
	} {
		a.onTCPEvent(ev)
	}
	if got := ring.Len(); got != 4 {
		t.Fatalf("%d flows, want 4 (RTT samples are metrics only)", got)
	}
	first := ring.Last(4, flow.Filter{})[0]
	if first.Source.IP.String() != "10.1.0.1" || first.L4.DestinationPort != 80 || first.L4.TCPFlags != flow.SYN {
		t.Fatalf("active established flow %+v", first)
	}
	passive := ring.Last(4, flow.Filter{})[1]
	if passive.Source.IP.String() != "10.1.0.1" || passive.L4.TCPFlags != flow.SYN|flow.ACK {
		t.Fatalf("passive established flow: source %s flags %v; want the client as source and SYN-ACK", passive.Source.IP, passive.L4.TCPFlags)
	}
	want := `
# HELP hubble_tcp_flags_total TCP flag occurrences
# TYPE hubble_tcp_flags_total counter
hubble_tcp_flags_total{family="IPv4",flag="FIN"} 1
hubble_tcp_flags_total{family="IPv4",flag="RST"} 1
hubble_tcp_flags_total{family="IPv4",flag="SYN"} 1
hubble_tcp_flags_total{family="IPv4",flag="SYN-ACK"} 1
`
	if err := promtestutil.GatherAndCompare(reg, strings.NewReader(want), "hubble_tcp_flags_total"); err != nil {
		t.Fatal(err)
	}
	if got := promtestutil.ToFloat64(a.m.tcpEvents.WithLabelValues("established")); got != 2 {
		t.Fatalf("moat_tcp_events_total{kind=established} = %v, want 2", got)
	}
}
