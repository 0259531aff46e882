package flow

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Flow is one observed event, shaped like a Hubble flow: a datapath verdict
// (L3/L4), or one side of an L7 exchange reported by a proxy.
//
// Direction conventions follow Hubble: Source and Destination are the packet's
// (or message's) sender and receiver, so an L7 response flows from the server
// to the client and has Reply set to ReplyYes.
type Flow struct {
	Time       time.Time
	Verdict    Verdict
	DropReason DropReason // set when Verdict is Dropped
	Type       FlowType   // L3_L4 or L7
	EventType  EventType  // which observation produced the flow
	// TraceObservationPoint names where a Trace event was seen
	// (Hubble's names: "to-endpoint", "to-proxy", "from-endpoint", ...).
	TraceObservationPoint string

	IPVersion        IPVersion
	L4               L4
	Source           Endpoint
	Destination      Endpoint
	TrafficDirection TrafficDirection
	Reply            ReplyState
	L7               *L7

	// TraceID is the W3C trace id of the exchange (from `traceparent`), if any.
	TraceID string
	// NodeName is the node that observed the flow.
	NodeName string
}

// Protocol is the protocol label Hubble uses for a flow: the L7 protocol
// ("HTTP", "DNS") for L7 flows, else the L4 protocol ("TCP", "UDP",
// "ICMPv4", "ICMPv6", "SCTP").
func (f *Flow) Protocol() string {
	if f.EventType == EventL7 || f.Type == TypeL7 {
		switch {
		case f.L7 == nil:
			return "Unknown L7"
		case f.L7.HTTP != nil:
			return "HTTP"
		case f.L7.DNS != nil:
			return "DNS"
		}
		return "Unknown L7"
	}
	if f.L4.Protocol == ProtoNone {
		return "Unknown L4"
	}
	return f.L4.Protocol.String()
}

// Reporter is "client" for egress flows, "server" for ingress ones and
// "unknown" otherwise, as in Hubble's HTTP metrics.
func (f *Flow) Reporter() string {
	switch f.TrafficDirection {
	case Egress:
		return "client"
	case Ingress:
		return "server"
	}
	return "unknown"
}

// Verdict is Hubble's verdict.
type Verdict uint8

// Verdicts, named as in Hubble.
const (
	VerdictUnknown Verdict = iota
	Forwarded
	Dropped
	VerdictError
	Audit
	Redirected
	Traced
	Translated
)

var verdictNames = [...]string{"VERDICT_UNKNOWN", "FORWARDED", "DROPPED", "ERROR", "AUDIT", "REDIRECTED", "TRACED", "TRANSLATED"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("VERDICT(%d)", uint8(v))
}

// ParseVerdict reads a verdict name (case-insensitive).
func ParseVerdict(s string) (Verdict, error) {
	for i, n := range verdictNames {
		if strings.EqualFold(n, s) {
			return Verdict(i), nil
		}
	}
	return VerdictUnknown, fmt.Errorf("parse verdict %q: want one of %s", s, strings.Join(verdictNames[1:], ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *Verdict) UnmarshalText(b []byte) error {
	p, err := ParseVerdict(string(b))
	*v = p
	return err
}

// DropReason is the name of Hubble's drop reason (its DropReason enum name,
// which is what hubble_drop_total's "reason" label carries).
type DropReason string

// Drop reasons moat produces.
const (
	DropReasonUnknown DropReason = "DROP_REASON_UNKNOWN"
	// DropPolicyDenied: no policy entry allows the flow (default deny).
	DropPolicyDenied DropReason = "POLICY_DENIED"
	// DropPolicyDeny: an explicit deny rule matched.
	DropPolicyDeny DropReason = "POLICY_DENY"
	// DropProxyUnavailable: the flow needed a proxy that was not there (fail closed).
	DropProxyUnavailable DropReason = "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL"
	// DropInvalidPacket: malformed packet.
	DropInvalidPacket DropReason = "INVALID_PACKET_DROPPED"
)

// FlowType is Hubble's flow type.
type FlowType uint8

// Flow types.
const (
	TypeUnknown FlowType = iota
	TypeL3L4
	TypeL7
)

func (t FlowType) String() string {
	switch t {
	case TypeL3L4:
		return "L3_L4"
	case TypeL7:
		return "L7"
	}
	return "UNKNOWN_TYPE"
}

// MarshalText implements encoding.TextMarshaler.
func (t FlowType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// EventType says which observation produced a flow; its String is the "type"
// label of hubble_flows_processed_total.
type EventType uint8

// Event types.
const (
	EventUnknown EventType = iota
	EventDrop
	EventTrace
	EventPolicyVerdict
	EventL7 // a proxy access log (Hubble: MessageTypeAccessLog)
)

func (e EventType) String() string {
	switch e {
	case EventDrop:
		return "Drop"
	case EventTrace:
		return "Trace"
	case EventPolicyVerdict:
		return "PolicyVerdict"
	case EventL7:
		return "L7"
	}
	return "Unknown"
}

// MarshalText implements encoding.TextMarshaler.
func (e EventType) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// IPVersion is Hubble's IP version; its String is the "family" label.
type IPVersion uint8

// IP versions.
const (
	IPNotUsed IPVersion = iota
	IPv4
	IPv6
)

func (v IPVersion) String() string {
	switch v {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return "IP_NOT_USED"
}

// MarshalText implements encoding.TextMarshaler.
func (v IPVersion) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// TrafficDirection is the direction relative to the local endpoint.
type TrafficDirection uint8

// Traffic directions.
const (
	DirectionUnknown TrafficDirection = iota
	Ingress
	Egress
)

// String returns the lower-case form used in metric labels.
func (d TrafficDirection) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return "unknown"
}

// MarshalText implements encoding.TextMarshaler (Hubble's enum names).
func (d TrafficDirection) MarshalText() ([]byte, error) {
	switch d {
	case Ingress:
		return []byte("INGRESS"), nil
	case Egress:
		return []byte("EGRESS"), nil
	}
	return []byte("TRAFFIC_DIRECTION_UNKNOWN"), nil
}

// ReplyState says whether a flow is a reply; Hubble leaves it unset when the
// datapath cannot tell.
type ReplyState uint8

// Reply states.
const (
	ReplyUnknown ReplyState = iota
	ReplyNo
	ReplyYes
)

// Protocol is an L4 protocol.
type Protocol uint8

// L4 protocols.
const (
	ProtoNone Protocol = iota
	ProtoTCP
	ProtoUDP
	ProtoICMPv4
	ProtoICMPv6
	ProtoSCTP
)

func (p Protocol) String() string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMPv4:
		return "ICMPv4"
	case ProtoICMPv6:
		return "ICMPv6"
	case ProtoSCTP:
		return "SCTP"
	}
	return ""
}

// MarshalText implements encoding.TextMarshaler.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// TCPFlags is a set of TCP flags.
type TCPFlags uint16

// TCP flags.
const (
	FIN TCPFlags = 1 << iota
	SYN
	RST
	PSH
	ACK
	URG
	ECE
	CWR
	NS
)

var tcpFlagNames = [...]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"}

// String lists the set flags separated by "|" (e.g. "SYN|ACK").
func (t TCPFlags) String() string {
	var b strings.Builder
	for i, n := range tcpFlagNames {
		if t&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte('|')
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// L4 holds the transport header fields of a flow.
type L4 struct {
	Protocol        Protocol
	SourcePort      uint16
	DestinationPort uint16
	TCPFlags        TCPFlags
	ICMPType        uint8
	ICMPCode        uint8
}

// L7Type is Hubble's L7 flow type.
type L7Type uint8

// L7 flow types.
const (
	L7Unknown L7Type = iota
	L7Request
	L7Response
	L7Sample
)

func (t L7Type) String() string {
	switch t {
	case L7Request:
		return "REQUEST"
	case L7Response:
		return "RESPONSE"
	case L7Sample:
		return "SAMPLE"
	}
	return "UNKNOWN_L7_TYPE"
}

// MarshalText implements encoding.TextMarshaler.
func (t L7Type) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// L7 is the application-layer part of an L7 flow: exactly one of HTTP and DNS
// is set.
type L7 struct {
	Type    L7Type
	Latency time.Duration // request to last response byte (responses only)
	HTTP    *HTTP
	DNS     *DNS
}

// HTTP is one HTTP request or response.
type HTTP struct {
	Code     uint32 // response status; 0 on requests
	Method   string
	URL      string // path and query as the client sent it
	Host     string // :authority / Host
	Protocol string // "HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"
}

// DNS is one DNS query or response.
type DNS struct {
	Query   string   // FQDN with trailing dot
	Qtypes  []string // e.g. "A", "AAAA"
	Rcode   uint32   // responses only
	IPs     []string // addresses in the answer
	Rrtypes []string // answer record types
	TTL     uint32
}

// jsonFlow is the JSON form of a Flow (snake_case, enums by name, like
// `hubble observe -o json` where the fields exist).
type jsonFlow struct {
	Time                  time.Time        `json:"time"`
	Verdict               Verdict          `json:"verdict"`
	DropReason            DropReason       `json:"drop_reason_desc,omitempty"`
	Type                  FlowType         `json:"Type"`
	EventType             EventType        `json:"event_type"`
	TraceObservationPoint string           `json:"trace_observation_point,omitempty"`
	NodeName              string           `json:"node_name,omitempty"`
	IP                    *jsonIP          `json:"IP,omitempty"`
	L4                    *jsonL4          `json:"l4,omitempty"`
	Source                *jsonEndpoint    `json:"source,omitempty"`
	Destination           *jsonEndpoint    `json:"destination,omitempty"`
	TrafficDirection      TrafficDirection `json:"traffic_direction"`
	IsReply               *bool            `json:"is_reply,omitempty"`
	L7                    *jsonL7          `json:"l7,omitempty"`
	TraceID               string           `json:"trace_id,omitempty"`
}

type jsonIP struct {
	Source      string    `json:"source,omitempty"`
	Destination string    `json:"destination,omitempty"`
	IPVersion   IPVersion `json:"ipVersion"`
}

type jsonL4 struct {
	Protocol        Protocol `json:"protocol"`
	SourcePort      uint16   `json:"source_port,omitempty"`
	DestinationPort uint16   `json:"destination_port,omitempty"`
	Flags           []string `json:"flags,omitempty"`
	ICMPType        *uint8   `json:"icmp_type,omitempty"`
	ICMPCode        *uint8   `json:"icmp_code,omitempty"`
}

type jsonEndpoint struct {
	Identity  uint32   `json:"identity"`
	Namespace string   `json:"namespace,omitempty"`
	PodName   string   `json:"pod_name,omitempty"`
	Workload  string   `json:"workload,omitempty"`
	App       string   `json:"app,omitempty"`
	Labels    []string `json:"labels,omitempty"`
}

type jsonL7 struct {
	Type      L7Type    `json:"type"`
	LatencyNs int64     `json:"latency_ns,omitempty"`
	HTTP      *jsonHTTP `json:"http,omitempty"`
	DNS       *DNSJSON  `json:"dns,omitempty"`
}

type jsonHTTP struct {
	Code     uint32 `json:"code,omitempty"`
	Method   string `json:"method,omitempty"`
	URL      string `json:"url,omitempty"`
	Host     string `json:"host,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Reporter string `json:"reporter,omitempty"`
}

// DNSJSON is the JSON form of DNS.
type DNSJSON struct {
	Query   string   `json:"query,omitempty"`
	Qtypes  []string `json:"qtypes,omitempty"`
	Rcode   uint32   `json:"rcode"`
	IPs     []string `json:"ips,omitempty"`
	Rrtypes []string `json:"rrtypes,omitempty"`
	TTL     uint32   `json:"ttl,omitempty"`
}

// MarshalJSON renders the flow in a Hubble-like JSON shape.
func (f Flow) MarshalJSON() ([]byte, error) {
	j := jsonFlow{
		Time:                  f.Time,
		Verdict:               f.Verdict,
		Type:                  f.Type,
		EventType:             f.EventType,
		TraceObservationPoint: f.TraceObservationPoint,
		NodeName:              f.NodeName,
		Source:                f.Source.toJSON(),
		Destination:           f.Destination.toJSON(),
		TrafficDirection:      f.TrafficDirection,
		TraceID:               f.TraceID,
	}
	if f.Verdict == Dropped {
		j.DropReason = f.DropReason
	}
	if f.Source.IP.IsValid() || f.Destination.IP.IsValid() || f.IPVersion != IPNotUsed {
		j.IP = &jsonIP{IPVersion: f.IPVersion}
		if f.Source.IP.IsValid() {
			j.IP.Source = f.Source.IP.String()
		}
		if f.Destination.IP.IsValid() {
			j.IP.Destination = f.Destination.IP.String()
		}
	}
	if f.L4.Protocol != ProtoNone {
		l4 := &jsonL4{Protocol: f.L4.Protocol, SourcePort: f.L4.SourcePort, DestinationPort: f.L4.DestinationPort}
		for i, n := range tcpFlagNames {
			if f.L4.TCPFlags&(1<<i) != 0 {
				l4.Flags = append(l4.Flags, n)
			}
		}
		if f.L4.Protocol == ProtoICMPv4 || f.L4.Protocol == ProtoICMPv6 {
			t, c := f.L4.ICMPType, f.L4.ICMPCode
			l4.ICMPType, l4.ICMPCode = &t, &c
		}
		j.L4 = l4
	}
	switch f.Reply {
	case ReplyYes:
		t := true
		j.IsReply = &t
	case ReplyNo:
		n := false
		j.IsReply = &n
	}
	if f.L7 != nil {
		l7 := &jsonL7{Type: f.L7.Type, LatencyNs: f.L7.Latency.Nanoseconds()}
		if h := f.L7.HTTP; h != nil {
			l7.HTTP = &jsonHTTP{Code: h.Code, Method: h.Method, URL: h.URL, Host: h.Host, Protocol: h.Protocol, Reporter: f.Reporter()}
		}
		if d := f.L7.DNS; d != nil {
			l7.DNS = &DNSJSON{Query: d.Query, Qtypes: d.Qtypes, Rcode: d.Rcode, IPs: d.IPs, Rrtypes: d.Rrtypes, TTL: d.TTL}
		}
		j.L7 = l7
	}
	return json.Marshal(j)
}

func (e Endpoint) toJSON() *jsonEndpoint {
	if e.Identity == 0 && e.Namespace == "" && e.PodName == "" && len(e.Labels) == 0 {
		return nil
	}
	return &jsonEndpoint{
		Identity:  e.Identity,
		Namespace: e.Namespace,
		PodName:   e.PodName,
		Workload:  e.Workload,
		App:       e.App,
		Labels:    e.Labels,
	}
}
