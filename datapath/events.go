package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/moatnet/moat/policy"
)

// Event kinds (bpf/moat.h EV_*).
const (
	evDrop    = 1
	evVerdict = 2
	evToProxy = 3
)

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	EventDrop    EventKind = evDrop    // a packet was dropped (Reason says why)
	EventVerdict EventKind = evVerdict // a new flow's verdict (with Config.VerdictEvents)
	EventToProxy EventKind = evToProxy // a new flow was handed to a proxy
)

func (k EventKind) String() string {
	switch k {
	case EventDrop:
		return "drop"
	case EventVerdict:
		return "verdict"
	case EventToProxy:
		return "to-proxy"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// DropReason says why a packet was dropped (bpf/moat.h DROP_*).
type DropReason uint8

// Drop reasons.
const (
	DropNone             DropReason = 0
	DropPolicyDenied     DropReason = 1 // no entry allows it and the direction is enforced
	DropPolicyDeny       DropReason = 2 // an explicit deny entry matched
	DropProxyUnavailable DropReason = 3 // redirect, but no proxy port or listener
	DropCTInvalid        DropReason = 4 // mid-stream packet of a redirected flow with no proxy socket, or a tracked flow a policy change now redirects
	DropMalformed        DropReason = 5 // truncated or unparsable headers
	DropNoEndpoint       DropReason = 6 // programs attached to an interface without endpoint config
	DropUnsupported      DropReason = 7 // a non-first fragment no all-ports entry allows, or an IPv6 header chain too long to follow
)

// String returns Hubble's drop reason name where one exists.
func (r DropReason) String() string {
	switch r {
	case DropNone:
		return ""
	case DropPolicyDenied:
		return "POLICY_DENIED"
	case DropPolicyDeny:
		return "POLICY_DENY"
	case DropProxyUnavailable:
		return "PROXY_UNAVAILABLE"
	case DropCTInvalid:
		return "CT_INVALID"
	case DropMalformed:
		return "INVALID_PACKET"
	case DropNoEndpoint:
		return "NO_ENDPOINT"
	case DropUnsupported:
		return "UNSUPPORTED_L3_PROTOCOL"
	}
	return fmt.Sprintf("REASON_%d", uint8(r))
}

// MatchType says which kind of entry decided a verdict.
type MatchType uint8

// Match types.
const (
	MatchNone   MatchType = 0 // no entry: default (allow when not enforced, else drop)
	MatchL3Only MatchType = 1 // identity, any protocol
	MatchL3L4   MatchType = 2 // identity and protocol/port
	MatchL4Only MatchType = 3 // any identity, protocol/port
	MatchAll    MatchType = 4 // any identity, any protocol
)

func (m MatchType) String() string {
	switch m {
	case MatchL3Only:
		return "L3-only"
	case MatchL3L4:
		return "L3-L4"
	case MatchL4Only:
		return "L4-only"
	case MatchAll:
		return "all"
	}
	return "none"
}

// Event is a datapath event.
type Event struct {
	Time       time.Time     // when the agent read it
	KernelTime time.Duration // bpf_ktime_get_ns (CLOCK_MONOTONIC) at emission
	Kind       EventKind
	Reason     DropReason // for EventDrop
	Endpoint   uint32     // ifindex of the endpoint's host veth
	Direction  policy.Direction
	// SrcIdentity and DstIdentity are the packet's source and destination
	// identities (one of them is the endpoint's own).
	SrcIdentity policy.ID
	DstIdentity policy.ID
	Src, Dst    netip.AddrPort // for ICMP echo the identifier is the source port of requests
	Proto       policy.Protocol
	PolicyPort  uint16 // destination port, or the ICMP type
	Verdict     policy.Verdict
	Match       MatchType
	L7          policy.L7Kind
	ProxyPort   uint16
	Rule        uint32 // rule index (Datapath.Rule), 0 for none
	Length      uint32 // packet length in bytes
	TCPFlags    uint8
	FromProxy   bool // the packet carried a from-proxy mark
}

const eventSize = 80

// DecodeEvent decodes a raw ringbuf record.
func DecodeEvent(raw []byte) (Event, error) {
	if len(raw) < eventSize {
		return Event{}, fmt.Errorf("decode event: %d bytes, want %d", len(raw), eventSize)
	}
	var e moatEvent
	if err := binary.Read(bytes.NewReader(raw[:eventSize]), binary.NativeEndian, &e); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	return Event{
		KernelTime:  time.Duration(e.TimestampNs),
		Kind:        EventKind(e.Kind),
		Reason:      DropReason(e.Reason),
		Endpoint:    e.Endpoint,
		Direction:   policy.Direction(e.Direction),
		SrcIdentity: policy.ID(e.SrcIdentity),
		DstIdentity: policy.ID(e.DstIdentity),
		Src:         netip.AddrPortFrom(addrFrom16(e.Saddr, e.Family), e.Sport),
		Dst:         netip.AddrPortFrom(addrFrom16(e.Daddr, e.Family), e.Dport),
		Proto:       policy.Protocol(e.Proto),
		PolicyPort:  e.PolicyPort,
		Verdict:     policy.Verdict(e.Verdict),
		Match:       MatchType(e.Match),
		L7:          policy.L7Kind(e.L7),
		ProxyPort:   e.ProxyPort,
		Rule:        e.Rule,
		Length:      e.Length,
		TCPFlags:    e.TcpFlags,
		FromProxy:   e.Flags&2 != 0,
	}, nil
}

// ReadEvents reads the event ringbuf and calls fn for each event until ctx
// is done (then it returns nil). Only one reader may run at a time.
func (d *Datapath) ReadEvents(ctx context.Context, fn func(Event)) error {
	return ringbufReader[Event]{
		m: d.objs.MoatEvents, what: "event", decode: DecodeEvent,
		stamp: func(e *Event, t time.Time) { e.Time = t }, now: d.cfg.Now, log: d.log,
	}.run(ctx, fn)
}
