package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"
)

// TCPEventKind says what a TCPEvent reports (bpf/tcp.h TCP_EV_*).
type TCPEventKind uint8

// TCP event kinds.
const (
	// TCPSYNTimeout: an active open's SYN went unanswered for
	// SockOpsConfig.SYNTimeout. Reported once per socket, at the first SYN
	// retransmission timeout past it or when the socket closes in SYN_SENT.
	TCPSYNTimeout TCPEventKind = 1
	// TCPRetransmit: an established flow retransmitted (at most one event
	// per RetransInterval per socket); TotalRetrans is the flow's count.
	TCPRetransmit TCPEventKind = 2
	// TCPRTT: an RTT sample (at most one per RTTInterval per socket).
	TCPRTT TCPEventKind = 3
	// TCPReset: a synchronized connection went to CLOSE without the FIN
	// exchange: an RST was received, or this side aborted (SO_LINGER 0,
	// retransmissions exhausted). Which of the two is not known.
	TCPReset TCPEventKind = 4
	// TCPEstablished: the handshake completed (Active says which side).
	TCPEstablished TCPEventKind = 5
	// TCPClosed: an established connection closed through the FIN exchange.
	TCPClosed TCPEventKind = 6
	// TCPRefused: an active open closed in SYN_SENT before SYNTimeout
	// (an RST answered the SYN, or the application gave up early).
	TCPRefused TCPEventKind = 7
)

func (k TCPEventKind) String() string {
	switch k {
	case TCPSYNTimeout:
		return "syn-timeout"
	case TCPRetransmit:
		return "retransmit"
	case TCPRTT:
		return "rtt"
	case TCPReset:
		return "reset"
	case TCPEstablished:
		return "established"
	case TCPClosed:
		return "closed"
	case TCPRefused:
		return "refused"
	}
	return fmt.Sprintf("tcp-kind-%d", uint8(k))
}

// TCPState is a kernel TCP state (BPF_TCP_*).
type TCPState uint8

// TCP states.
const (
	TCPStateEstablished TCPState = 1
	TCPStateSynSent     TCPState = 2
	TCPStateSynRecv     TCPState = 3
	TCPStateFinWait1    TCPState = 4
	TCPStateFinWait2    TCPState = 5
	TCPStateTimeWait    TCPState = 6
	TCPStateClose       TCPState = 7
	TCPStateCloseWait   TCPState = 8
	TCPStateLastAck     TCPState = 9
	TCPStateListen      TCPState = 10
	TCPStateClosing     TCPState = 11
)

func (s TCPState) String() string {
	names := [...]string{"", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
		"TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING"}
	if int(s) < len(names) && s != 0 {
		return names[s]
	}
	return fmt.Sprintf("STATE_%d", uint8(s))
}

// TCPEvent is a TCP health event of one socket. Local and Remote are from
// the socket's point of view.
type TCPEvent struct {
	Time       time.Time     // when the agent read it
	KernelTime time.Duration // bpf_ktime_get_ns (CLOCK_MONOTONIC) at emission
	Kind       TCPEventKind
	Cookie     uint64 // socket cookie: the same for every event of a socket
	Local      netip.AddrPort
	Remote     netip.AddrPort
	Active     bool // this host opened the connection
	// Duration: for Closed and Reset, since the handshake completed (0 when
	// it never did); for SYNTimeout, Refused and Established, since connect
	// (0 for passive opens); for Retransmit and RTT, the connection's age.
	Duration time.Duration
	RTT      time.Duration // RTT: this sample
	SRTT     time.Duration // smoothed RTT at emission
	// TotalRetrans is the socket's retransmitted segments so far; RTOs the
	// retransmission timeouts seen (for SYNTimeout: SYN retransmissions).
	TotalRetrans  uint32
	RTOs          uint32
	BytesAcked    uint64 // bytes sent and acknowledged
	BytesReceived uint64
	SegsIn        uint32
	SegsOut       uint32
	// OldState and NewState are the transition for Reset, Closed, Refused
	// and SYNTimeout at close; the current state for the others.
	OldState, NewState TCPState
}

const tcpEventSize = 112

// DecodeTCPEvent decodes a raw moat_tcp_events record.
func DecodeTCPEvent(raw []byte) (TCPEvent, error) {
	if len(raw) < tcpEventSize {
		return TCPEvent{}, fmt.Errorf("decode tcp event: %d bytes, want %d", len(raw), tcpEventSize)
	}
	var e sockopsTcpEvent
	if err := binary.Read(bytes.NewReader(raw[:tcpEventSize]), binary.NativeEndian, &e); err != nil {
		return TCPEvent{}, fmt.Errorf("decode tcp event: %w", err)
	}
	return TCPEvent{
		KernelTime:    time.Duration(e.TimestampNs),
		Kind:          TCPEventKind(e.Kind),
		Cookie:        e.Cookie,
		Local:         netip.AddrPortFrom(addrFrom16(e.Saddr, e.Family), e.Sport),
		Remote:        netip.AddrPortFrom(addrFrom16(e.Daddr, e.Family), e.Dport),
		Active:        e.Flags&1 != 0,
		Duration:      time.Duration(e.DurationNs),
		RTT:           time.Duration(e.RttUs) * time.Microsecond,
		SRTT:          time.Duration(e.SrttUs) * time.Microsecond,
		TotalRetrans:  e.TotalRetrans,
		RTOs:          e.Rtos,
		BytesAcked:    e.BytesAcked,
		BytesReceived: e.BytesReceived,
		SegsIn:        e.SegsIn,
		SegsOut:       e.SegsOut,
		OldState:      TCPState(e.OldState),
		NewState:      TCPState(e.NewState),
	}, nil
}

// ReadEvents reads moat_tcp_events and calls fn for each event until ctx is
// done (then it returns nil). Only one reader may run at a time.
func (s *SockOps) ReadEvents(ctx context.Context, fn func(TCPEvent)) error {
	return ringbufReader[TCPEvent]{
		m: s.objs.MoatTcpEvents, what: "tcp event", decode: DecodeTCPEvent,
		stamp: func(e *TCPEvent, t time.Time) { e.Time = t }, now: s.cfg.Now, log: s.log,
	}.run(ctx, fn)
}

// EventStats returns the TCP event counters (emitted, rate limited, lost to
// a full ringbuf), summed over CPUs.
func (s *SockOps) EventStats() (EventStats, error) {
	var per []sockopsTcpEventStats
	if err := s.objs.MoatTcpStats.Lookup(uint32(0), &per); err != nil {
		return EventStats{}, fmt.Errorf("read tcp event stats: %w", err)
	}
	var st EventStats
	for _, p := range per {
		st.Emitted += p.Emitted
		st.RateLimited += p.RateLimited
		st.RingbufFull += p.RingbufFull
	}
	return st, nil
}
