package flow

import (
	"net/netip"
	"time"
)

var (
	t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	clientEP = Endpoint{
		IP: netip.MustParseAddr("10.0.0.1"), Identity: 256, Namespace: "shop", PodName: "frontend-7d9f8b6c4-abcde",
		Workload: "frontend", App: "frontend", Labels: []string{"k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"},
	}
	serverEP = Endpoint{
		IP: netip.MustParseAddr("10.0.0.2"), Identity: 257, Namespace: "shop", PodName: "api-5c6d7f8b9-xyz12",
		Workload: "api", App: "api", Labels: []string{"k8s:app=api", "k8s:io.kubernetes.pod.namespace=shop"},
	}
	worldEP = Endpoint{IP: netip.MustParseAddr("1.1.1.1"), Identity: 2, Labels: []string{"reserved:world"}}
)

// testEnricher knows clientEP and serverEP.
var testEnricher = EnricherFunc(func(ip netip.Addr) (Endpoint, bool) {
	switch ip {
	case clientEP.IP:
		return clientEP, true
	case serverEP.IP:
		return serverEP, true
	}
	return Endpoint{}, false
})

// httpResponse is the response flow of a client->server HTTP exchange seen
// by the given side.
func httpResponse(dir TrafficDirection, method string, code uint32, latency time.Duration, traceID string) Flow {
	return Flow{
		Time: t0, Verdict: Forwarded, Type: TypeL7, EventType: EventL7, IPVersion: IPv4,
		L4:     L4{Protocol: ProtoTCP, SourcePort: 8080, DestinationPort: 40000},
		Source: serverEP, Destination: clientEP, TrafficDirection: dir, Reply: ReplyYes,
		L7: &L7{Type: L7Response, Latency: latency, HTTP: &HTTP{
			Code: code, Method: method, URL: "http://api.shop/v1/items", Host: "api.shop", Protocol: "HTTP/1.1",
		}},
		TraceID: traceID,
	}
}

func httpRequest(dir TrafficDirection, method string) Flow {
	return Flow{
		Time: t0, Verdict: Forwarded, Type: TypeL7, EventType: EventL7, IPVersion: IPv4,
		L4:     L4{Protocol: ProtoTCP, SourcePort: 40000, DestinationPort: 8080},
		Source: clientEP, Destination: serverEP, TrafficDirection: dir, Reply: ReplyNo,
		L7: &L7{Type: L7Request, HTTP: &HTTP{Method: method, URL: "http://api.shop/v1/items", Host: "api.shop", Protocol: "HTTP/1.1"}},
	}
}

func tcpFlow(v Verdict, flags TCPFlags, reply ReplyState) Flow {
	f := Flow{
		Time: t0, Verdict: v, Type: TypeL3L4, EventType: EventTrace, TraceObservationPoint: "to-endpoint", IPVersion: IPv4,
		L4:     L4{Protocol: ProtoTCP, SourcePort: 40000, DestinationPort: 8080, TCPFlags: flags},
		Source: clientEP, Destination: serverEP, TrafficDirection: Egress, Reply: reply,
	}
	if v == Dropped {
		f.EventType = EventDrop
		f.TraceObservationPoint = ""
		f.DropReason = DropPolicyDenied
	}
	return f
}

func dnsFlow(v Verdict, reply ReplyState, rcode uint32, ips []string, rrtypes []string) Flow {
	f := Flow{
		Time: t0, Verdict: v, Type: TypeL7, EventType: EventL7, IPVersion: IPv4,
		L4:     L4{Protocol: ProtoUDP, SourcePort: 53000, DestinationPort: 53},
		Source: clientEP, Destination: Endpoint{IP: netip.MustParseAddr("10.96.0.10"), Namespace: "kube-system", PodName: "coredns-0", Workload: "coredns"},
		TrafficDirection: Egress, Reply: reply,
		L7: &L7{Type: L7Request, DNS: &DNS{Query: "api.example.com.", Qtypes: []string{"A"}, Rcode: rcode, IPs: ips, Rrtypes: rrtypes}},
	}
	if reply == ReplyYes {
		f.L7.Type = L7Response
		f.Source, f.Destination = f.Destination, f.Source
	}
	return f
}

func icmpFlow(p Protocol, typ, code uint8) Flow {
	ipv := IPv4
	if p == ProtoICMPv6 {
		ipv = IPv6
	}
	return Flow{
		Time: t0, Verdict: Forwarded, Type: TypeL3L4, EventType: EventTrace, TraceObservationPoint: "to-stack", IPVersion: ipv,
		L4: L4{Protocol: p, ICMPType: typ, ICMPCode: code}, Source: clientEP, Destination: worldEP, TrafficDirection: Egress, Reply: ReplyNo,
	}
}
