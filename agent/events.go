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
	f.Source = a.sourceInfo(ev.Src, ev.SrcIdentity, ev.FromProxy)
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

// sourceInfo is endpointInfo for a packet's source, which may be the
// proxy's upstream leg: traffic leaving the proxy comes from the proxy's
// own address, not the client's. Such a source is shown with the client's
// endpoint (its IP stays the packet's): first from the access log, which
// names the client of each upstream connection (flow.AccessLogServer.ClientOf),
// then, for packets that carry the from-proxy mark, from the source
// identity the mark carries when exactly one local endpoint has it.
func (a *Agent) sourceInfo(src netip.AddrPort, id policy.ID, fromProxy bool) flow.Endpoint {
	ip := src.Addr().Unmap()
	if _, ok := a.resolve(ip); ok {
		return a.endpointInfo(ip, id)
	}
	if a.als != nil && src.Port() != 0 {
		if client, ok := a.als.ClientOf(src); ok {
			if ep, ok := a.resolve(client.Addr()); ok {
				ep.IP = ip
				if id != 0 {
					ep.Identity = uint32(id)
				}
				return ep
			}
		}
	}
	if fromProxy && id != 0 {
		if ep, ok := a.endpointByIdentity(id); ok {
			ep.IP = ip
			return ep
		}
	}
	return a.endpointInfo(ip, id)
}

// endpointByIdentity returns the local endpoint with identity id when
// exactly one has it.
func (a *Agent) endpointByIdentity(id policy.ID) (flow.Endpoint, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var found flow.Endpoint
	n := 0
	for _, ep := range a.state.enricher {
		if ep.Identity != uint32(id) {
			continue
		}
		if n > 0 && (ep.Namespace != found.Namespace || ep.PodName != found.PodName) {
			return flow.Endpoint{}, false
		}
		found, n = ep, n+1
	}
	return found, n > 0
}

// recordTCP records a sock-ops flow (src is the side that opened the
// connection) when it concerns one of moat's endpoints, with the traffic
// direction seen from that endpoint: egress when the opener is a local
// endpoint, ingress when the other side is. The sock-ops program sees
// every socket on the host; flows between other processes are not moat's
// to show. A source that is the proxy's upstream leg is shown with the
// client's endpoint (sourceInfo).
func (a *Agent) recordTCP(f flow.Flow) {
	src := netip.AddrPortFrom(f.Source.IP, f.L4.SourcePort)
	srcLocal := a.isEndpoint(f.Source.IP)
	dstLocal := a.isEndpoint(f.Destination.IP)
	if !srcLocal && a.als != nil {
		if client, ok := a.als.ClientOf(src); ok && a.isEndpoint(client.Addr()) {
			id := f.Source.Identity
			f.Source = a.sourceInfo(src, policy.ID(id), false)
			srcLocal = true
		}
	}
	switch {
	case srcLocal:
		f.TrafficDirection = flow.Egress
	case dstLocal:
		f.TrafficDirection = flow.Ingress
	default:
		return
	}
	if f.L4.TCPFlags&(flow.SYN|flow.ACK) == flow.SYN|flow.ACK {
		f.Reply = flow.ReplyYes // the responder's SYN-ACK
	}
	a.record(f)
}

func (a *Agent) isEndpoint(ip netip.Addr) bool {
	_, ok := a.resolve(ip)
	return ok
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
