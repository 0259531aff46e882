package agent

import (
	"net/netip"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// record enriches nothing further: it stores a finished flow and counts it.
func (a *Agent) record(f flow.Flow) {
	if f.NodeName == "" {
		f.NodeName = a.cfg.NodeName
	}
	a.ring.Write(f)
	a.flows.Process(f)
}

// resolve implements flow.Enricher from the current plan.
func (a *Agent) resolve(ip netip.Addr) (flow.Endpoint, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	ep, ok := a.state.enricher[ip.Unmap().String()]
	return ep, ok
}

// onEvent turns a datapath event into a flow.
func (a *Agent) onEvent(ev datapath.Event) {
	a.record(a.eventFlow(ev))
}

func (a *Agent) eventFlow(ev datapath.Event) flow.Flow {
	f := flow.Flow{
		Time:      ev.Time,
		Type:      flow.TypeL3L4,
		IPVersion: flow.IPv4,
		NodeName:  a.cfg.NodeName,
		Reply:     flow.ReplyNo,
	}
	if ev.Src.Addr().Is6() && !ev.Src.Addr().Is4In6() {
		f.IPVersion = flow.IPv6
	}
	f.TrafficDirection = flow.Ingress
	if ev.Direction == policy.Egress {
		f.TrafficDirection = flow.Egress
	}
	f.L4 = flow.L4{Protocol: flowProto(ev.Proto, f.IPVersion)}
	switch ev.Proto {
	case policy.ProtoICMP, policy.ProtoICMPv6:
		f.L4.ICMPType = uint8(ev.PolicyPort)
	default:
		f.L4.SourcePort = ev.Src.Port()
		f.L4.DestinationPort = ev.Dst.Port()
	}
	if ev.Proto == policy.ProtoTCP {
		f.L4.TCPFlags = flow.TCPFlags(ev.TCPFlags)
	}
	f.Source = a.endpointInfo(ev.Src.Addr(), ev.SrcIdentity)
	f.Destination = a.endpointInfo(ev.Dst.Addr(), ev.DstIdentity)
	switch ev.Kind {
	case datapath.EventDrop:
		f.Verdict = flow.Dropped
		f.EventType = flow.EventDrop
		f.DropReason = dropReason(ev.Reason)
	case datapath.EventToProxy:
		f.Verdict = flow.Redirected
		f.EventType = flow.EventTrace
		f.TraceObservationPoint = "to-proxy"
	default:
		f.EventType = flow.EventPolicyVerdict
		f.Verdict = flow.Forwarded
		if ev.Verdict == policy.VerdictDeny {
			f.Verdict = flow.Dropped
		}
	}
	return f
}

func (a *Agent) endpointInfo(ip netip.Addr, id policy.ID) flow.Endpoint {
	ip = ip.Unmap()
	ep, ok := a.resolve(ip)
	if !ok {
		ep = flow.Endpoint{}
	}
	ep.IP = ip
	ep.Identity = uint32(id)
	return ep
}

func flowProto(p policy.Protocol, v flow.IPVersion) flow.Protocol {
	switch p {
	case policy.ProtoTCP:
		return flow.ProtoTCP
	case policy.ProtoUDP:
		return flow.ProtoUDP
	case policy.ProtoSCTP:
		return flow.ProtoSCTP
	case policy.ProtoICMP:
		return flow.ProtoICMPv4
	case policy.ProtoICMPv6:
		return flow.ProtoICMPv6
	}
	return flow.ProtoNone
}

func dropReason(r datapath.DropReason) flow.DropReason {
	switch r {
	case datapath.DropPolicyDenied:
		return flow.DropPolicyDenied
	case datapath.DropPolicyDeny:
		return flow.DropPolicyDeny
	case datapath.DropProxyUnavailable, datapath.DropCTInvalid:
		return flow.DropProxyUnavailable
	case datapath.DropMalformed:
		return flow.DropInvalidPacket
	}
	return flow.DropReasonUnknown
}
