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
	a.state.enricher = map[string]flow.Endpoint{"10.1.0.1": {Namespace: "default", PodName: "client", Identity: 300}}
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

// TestTCPEventScopeAndDirection: sock-ops flows are recorded only when one
// side is a moat endpoint, with the direction seen from that endpoint, for
// SYN-ACKs and FINs too.
func TestTCPEventScopeAndDirection(t *testing.T) {
	ring, err := flow.NewRing(flow.RingConfig{Capacity: 16})
	if err != nil {
		t.Fatal(err)
	}
	fm, err := flow.NewMetrics(nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{NodeName: "n1"}, m: newAgentMetrics(prometheus.NewRegistry()), ring: ring, flows: fm}
	a.state.enricher = map[string]flow.Endpoint{
		"10.1.0.1": {Namespace: "default", PodName: "client", Identity: 300},
		"10.1.0.2": {Namespace: "default", PodName: "server", Identity: 301},
	}
	client := netip.MustParseAddrPort("10.1.0.1:40000")
	server := netip.MustParseAddrPort("10.1.0.2:80")
	outside := netip.MustParseAddrPort("192.0.2.7:443")
	host := netip.MustParseAddrPort("127.0.0.1:5432")
	tests := []struct {
		name  string
		ev    datapath.TCPEvent
		want  flow.TrafficDirection
		reply flow.ReplyState
		kept  bool
	}{
		{"client SYN out", datapath.TCPEvent{Kind: datapath.TCPEstablished, Active: true, Local: client, Remote: outside}, flow.Egress, flow.ReplyUnknown, true},
		{"SYN-ACK of an outside server to the client", datapath.TCPEvent{Kind: datapath.TCPEstablished, Active: false, Local: outside, Remote: client}, flow.Egress, flow.ReplyYes, true},
		{"SYN-ACK of the server to an outside client", datapath.TCPEvent{Kind: datapath.TCPEstablished, Active: false, Local: server, Remote: outside}, flow.Ingress, flow.ReplyYes, true},
		{"FIN on the server's side", datapath.TCPEvent{Kind: datapath.TCPClosed, Active: false, Local: server, Remote: outside}, flow.Ingress, flow.ReplyUnknown, true},
		{"FIN on the client's side", datapath.TCPEvent{Kind: datapath.TCPClosed, Active: true, Local: client, Remote: server}, flow.Egress, flow.ReplyUnknown, true},
		{"RST between host processes", datapath.TCPEvent{Kind: datapath.TCPReset, Active: true, Local: host, Remote: outside}, 0, 0, false},
		{"host SYN-ACK", datapath.TCPEvent{Kind: datapath.TCPEstablished, Active: false, Local: host, Remote: outside}, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := ring.Len()
			a.onTCPEvent(tt.ev)
			if kept := ring.Len() > n; kept != tt.kept {
				t.Fatalf("recorded %v, want %v", kept, tt.kept)
			}
			if !tt.kept {
				return
			}
			f := ring.Last(1, flow.Filter{})[0]
			if f.TrafficDirection != tt.want || f.Reply != tt.reply {
				t.Errorf("direction %v reply %v, want %v %v", f.TrafficDirection, f.Reply, tt.want, tt.reply)
			}
		})
	}
}

// TestEventFlowProxyLeg: a packet of the proxy's upstream leg (from-proxy
// mark, the proxy's own source address) is shown with the client's
// endpoint, found by the identity the mark carries.
func TestEventFlowProxyLeg(t *testing.T) {
	a := &Agent{cfg: Config{NodeName: "n1"}}
	a.state.enricher = map[string]flow.Endpoint{
		"10.1.0.1": {Namespace: "default", PodName: "client", Identity: 300},
		"10.1.0.2": {Namespace: "default", PodName: "server", Identity: 301},
		"10.1.0.3": {Namespace: "default", PodName: "twin-a", Identity: 302},
		"10.1.0.4": {Namespace: "default", PodName: "twin-b", Identity: 302},
	}
	ev := datapath.Event{
		Kind: datapath.EventVerdict, Verdict: policy.VerdictAllow, Direction: policy.Ingress, FromProxy: true,
		SrcIdentity: 300, DstIdentity: 301, Proto: policy.ProtoTCP, PolicyPort: 80,
		Src: netip.MustParseAddrPort("169.254.42.1:41000"), Dst: netip.MustParseAddrPort("10.1.0.2:80"),
	}
	f := a.eventFlow(ev)
	if f.Source.PodName != "client" || f.Source.IP.String() != "169.254.42.1" || f.Source.Identity != 300 {
		t.Errorf("source %+v, want the client's endpoint with the packet's address", f.Source)
	}
	ev.SrcIdentity = 302 // two endpoints share it: no guess
	if f = a.eventFlow(ev); f.Source.PodName != "" || f.Source.Identity != 302 {
		t.Errorf("source %+v, want a bare address with identity 302", f.Source)
	}
	ev.SrcIdentity, ev.FromProxy = 300, false // not the proxy's leg
	if f = a.eventFlow(ev); f.Source.PodName != "" {
		t.Errorf("source %+v, want a bare address without the from-proxy mark", f.Source)
	}
}
