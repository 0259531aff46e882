package dnsproxy

import (
	"net/netip"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// flows.go owns the flow records of an exchange: a request (FORWARDED, or
// DROPPED with Hubble's policy-denied reason) and, for a forwarded query,
// the response (the answer the client got, including a SERVFAIL the proxy
// made). Package flow turns them into hubble_dns_* metrics and
// `moat observe` lines.

func (p *Proxy) emitRequest(x *exchange, allowed bool) {
	if p.cfg.OnFlow == nil {
		return
	}
	f := p.baseFlow(x, false)
	f.Verdict = flow.Forwarded
	if !allowed {
		f.Verdict = flow.Dropped
		f.DropReason = flow.DropPolicyDenied
	}
	f.L7.Type = flow.L7Request
	p.cfg.OnFlow(f)
}

func (p *Proxy) emitResponse(x *exchange, resp *dns.Msg) {
	if p.cfg.OnFlow == nil || resp == nil {
		return
	}
	f := p.baseFlow(x, true)
	f.Verdict = flow.Forwarded
	f.L7.Type = flow.L7Response
	f.L7.Latency = time.Since(x.q.start)
	f.L7.DNS.Rcode = uint32(resp.Rcode)
	f.L7.DNS.IPs = x.chain.ipStrings
	f.L7.DNS.Rrtypes = x.chain.rrtypes
	f.L7.DNS.TTL = x.chain.ttl
	p.cfg.OnFlow(f)
}

func (p *Proxy) baseFlow(x *exchange, reply bool) flow.Flow {
	client := flow.Endpoint{IP: x.q.client.Addr().Unmap(), Identity: uint32(x.ep.Identity), Namespace: x.ep.Namespace, PodName: x.ep.Name, Labels: x.ep.Labels}
	server := flow.Endpoint{IP: x.q.server.Addr().Unmap(), Identity: uint32(x.remote)}
	l4 := flow.L4{Protocol: flow.ProtoUDP, SourcePort: x.q.client.Port(), DestinationPort: x.q.server.Port()}
	if x.q.proto == policy.ProtoTCP {
		l4.Protocol = flow.ProtoTCP
	}
	f := flow.Flow{
		Time:             p.cfg.Now(),
		Type:             flow.TypeL7,
		EventType:        flow.EventL7,
		IPVersion:        ipVersion(x.q.client.Addr()),
		L4:               l4,
		Source:           client,
		Destination:      server,
		TrafficDirection: flow.Egress,
		Reply:            flow.ReplyNo,
		NodeName:         p.cfg.NodeName,
	}
	if reply {
		f.Source, f.Destination = server, client
		f.L4.SourcePort, f.L4.DestinationPort = l4.DestinationPort, l4.SourcePort
		f.Reply = flow.ReplyYes
	}
	q := x.req.Question[0]
	qt := dns.TypeToString[q.Qtype]
	f.L7 = &flow.L7{DNS: &flow.DNS{Query: q.Name, Qtypes: []string{qt}}}
	return f
}

func ipVersion(a netip.Addr) flow.IPVersion {
	if a.Is4() || a.Is4In6() {
		return flow.IPv4
	}
	return flow.IPv6
}
