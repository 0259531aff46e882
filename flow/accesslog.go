package flow

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
)

// AccessLogServer implements Envoy's gRPC access-log service
// (envoy.service.accesslog.v3.AccessLogService). Each HTTPAccessLogEntry
// becomes two L7 HTTP flows handed to the sink in order: the request (client
// to server) and the response (server to client, with status and latency).
//
// Direction convention: the stream's log name (CommonGrpcAccessLogConfig
// log_name, sent in the first message of each stream) is the name of the
// listener that logged, as the envoy translator writes it:
// "moat/egress-http/15001" or "moat/ingress-http/15002". A "/"-separated
// segment equal to "egress" or "ingress", or starting with "egress-" or
// "ingress-", gives the traffic direction (egress: reporter client; ingress:
// reporter server); any other name gives direction unknown.
//
// Addresses: the downstream remote address is the client and the downstream
// local address the server (proxy listeners are transparent, so the local
// address is the original destination). Both are resolved with the Enricher.
//
// Verdicts: the request flow says what became of the request, from the
// entry's response code details (Envoy's names, which l7proxy uses too). A
// request the proxy answered itself is never FORWARDED:
//
//   - Policy denials are DROPPED with reason POLICY_DENIED: response flags
//     with unauthorized details, details starting with "rbac_access_denied",
//     or a 403 whose details are "direct_response", "upgrade_failed",
//     "connect_not_allowed" or "filter_chain_not_found". This is what Hubble
//     shows for a request Cilium's proxy denies.
//   - Requests the connection manager refuses before any policy (400 for an
//     ambiguous or malformed path or Host, a header name with an
//     underscore, a codec error: any other details) are DROPPED with reason
//     INVALID_PACKET_DROPPED: the request never reached the server because
//     it was malformed, which is what that Hubble reason means for packets.
//   - Answers the proxy makes in place of the server without a denial (the
//     307 for an escaped slash, "..._redirected", and a route's
//     "direct_response") are REDIRECTED: like Hubble's REDIRECTED, the flow
//     went to the proxy and not to its destination.
//   - Failures to reach the upstream ("upstream_..." before the response
//     started, "cluster_not_found", "route_not_found", a refused upgrade
//     on a status other than 403) are ERROR.
//   - "via_upstream" (and entries without details, from producers that do
//     not set them) are FORWARDED.
//
// The response flow is FORWARDED in every case: the answer, whoever made
// it, went back to the client (and a denial is counted once in
// hubble_drop_total).
type AccessLogServer struct {
	alsv3.UnimplementedAccessLogServiceServer

	enricher Enricher
	sink     func(Flow)
	log      *slog.Logger
	legs     proxyLegs
}

// NewAccessLogServer returns an access-log service that enriches entries
// with enricher (may be nil) and hands the resulting flows to sink, which
// must be safe for concurrent use (one goroutine per stream).
func NewAccessLogServer(enricher Enricher, sink func(Flow), logger *slog.Logger) *AccessLogServer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &AccessLogServer{enricher: enricher, sink: sink, log: logger}
}

// Register adds the service to a gRPC server the caller owns.
func (s *AccessLogServer) Register(r grpc.ServiceRegistrar) {
	alsv3.RegisterAccessLogServiceServer(r, s)
}

// StreamAccessLogs receives one proxy's access-log stream until it ends.
func (s *AccessLogServer) StreamAccessLogs(stream alsv3.AccessLogService_StreamAccessLogsServer) error {
	var (
		dir     = DirectionUnknown
		node    string
		logName string
	)
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&alsv3.StreamAccessLogsResponse{})
		}
		if err != nil {
			return fmt.Errorf("receive access log from %q (%s): %w", node, logName, err)
		}
		if id := msg.GetIdentifier(); id != nil {
			node, logName = id.GetNode().GetId(), id.GetLogName()
			dir = DirectionFromLogName(logName)
			s.log.Debug("access log stream", "node", node, "log_name", logName, "direction", dir.String())
		}
		switch e := msg.GetLogEntries().(type) {
		case *alsv3.StreamAccessLogsMessage_HttpLogs:
			for _, entry := range e.HttpLogs.GetLogEntry() {
				s.rememberLeg(entry)
				req, resp := HTTPFlows(entry, dir, node, s.enricher)
				s.sink(req)
				s.sink(resp)
			}
		case *alsv3.StreamAccessLogsMessage_TcpLogs:
			// TCP proxying is not an L7 flow; the datapath reports it.
		}
	}
}

// rememberLeg records the entry's upstream connection (see ClientOf).
func (s *AccessLogServer) rememberLeg(e *accesslogv3.HTTPAccessLogEntry) {
	c := e.GetCommonProperties()
	up, upPort := socketAddr(c.GetUpstreamLocalAddress())
	client, clientPort := socketAddr(c.GetDownstreamRemoteAddress())
	if up.IsValid() && client.IsValid() {
		s.legs.add(netip.AddrPortFrom(up, upPort), netip.AddrPortFrom(client, clientPort))
	}
}

// DirectionFromLogName reads the traffic direction from an access log name
// (see AccessLogServer for the convention).
func DirectionFromLogName(name string) TrafficDirection {
	for seg := range strings.SplitSeq(name, "/") {
		switch {
		case seg == "egress" || strings.HasPrefix(seg, "egress-"):
			return Egress
		case seg == "ingress" || strings.HasPrefix(seg, "ingress-"):
			return Ingress
		}
	}
	return DirectionUnknown
}

// HTTPFlows converts one HTTP access-log entry into its request and response
// flows.
func HTTPFlows(e *accesslogv3.HTTPAccessLogEntry, dir TrafficDirection, node string, enr Enricher) (request, response Flow) {
	common := e.GetCommonProperties()
	client, clientPort := socketAddr(common.GetDownstreamRemoteAddress())
	server, serverPort := socketAddr(common.GetDownstreamLocalAddress())

	start := common.GetStartTime().AsTime()
	if common.GetStartTime() == nil {
		start = time.Time{}
	}
	latency := common.GetTimeToLastDownstreamTxByte().AsDuration()
	if latency == 0 {
		latency = common.GetDuration().AsDuration()
	}

	req := e.GetRequest()
	method := ""
	if m := req.GetRequestMethod(); m != corev3.RequestMethod_METHOD_UNSPECIFIED {
		method = m.String()
	}
	scheme := req.GetScheme()
	if scheme == "" {
		scheme = "http"
	}
	url := req.GetPath()
	if host := req.GetAuthority(); host != "" {
		url = scheme + "://" + host + req.GetPath()
	}
	code := e.GetResponse().GetResponseCode().GetValue()
	proto := httpProtocol(e.GetProtocolVersion())
	traceID := TraceIDFromTraceparent(req.GetRequestHeaders()["traceparent"])

	ipv := IPNotUsed
	switch {
	case client.Is4():
		ipv = IPv4
	case client.Is6():
		ipv = IPv6
	}

	request = Flow{
		Time:             start,
		Verdict:          Forwarded,
		Type:             TypeL7,
		EventType:        EventL7,
		IPVersion:        ipv,
		L4:               L4{Protocol: ProtoTCP, SourcePort: clientPort, DestinationPort: serverPort},
		Source:           Endpoint{IP: client},
		Destination:      Endpoint{IP: server},
		TrafficDirection: dir,
		Reply:            ReplyNo,
		L7: &L7{Type: L7Request, HTTP: &HTTP{
			Method: method, URL: url, Host: req.GetAuthority(), Protocol: proto,
		}},
		TraceID:  traceID,
		NodeName: node,
	}
	request.Verdict, request.DropReason = requestVerdict(e)
	Enrich(enr, &request)

	response = request
	response.Time = start.Add(latency)
	response.Verdict = Forwarded
	response.DropReason = ""
	response.Source, response.Destination = request.Destination, request.Source
	response.L4.SourcePort, response.L4.DestinationPort = serverPort, clientPort
	response.Reply = ReplyYes
	response.L7 = &L7{Type: L7Response, Latency: latency, HTTP: &HTTP{
		Code: code, Method: method, URL: url, Host: req.GetAuthority(), Protocol: proto,
	}}
	return request, response
}

// requestVerdict says what became of the request: forwarded to the
// upstream, or answered by the proxy itself (see AccessLogServer).
func requestVerdict(e *accesslogv3.HTTPAccessLogEntry) (Verdict, DropReason) {
	if denied(e) {
		return Dropped, DropPolicyDenied
	}
	details := e.GetResponse().GetResponseCodeDetails()
	switch {
	case details == "" || details == "via_upstream" || strings.HasPrefix(details, "upstream_reset_after_response_started"):
		// Entries without details come from producers that do not set
		// them; the response came from the upstream as far as we know.
		return Forwarded, ""
	case details == "direct_response" || strings.HasSuffix(details, "_redirected"):
		return Redirected, ""
	case strings.HasPrefix(details, "upstream_") || strings.HasPrefix(details, "cluster_not_found") ||
		strings.HasPrefix(details, "route_not_found") || strings.HasPrefix(details, "no_healthy_upstream") ||
		details == "upgrade_failed":
		return VerdictError, ""
	}
	// The connection manager refused the request itself: a codec error,
	// an ambiguous path or Host, a header it does not accept.
	return Dropped, DropInvalidPacket
}

func denied(e *accesslogv3.HTTPAccessLogEntry) bool {
	if e.GetCommonProperties().GetResponseFlags().GetUnauthorizedDetails() != nil {
		return true
	}
	details := e.GetResponse().GetResponseCodeDetails()
	if strings.HasPrefix(details, "rbac_access_denied") {
		return true
	}
	if e.GetResponse().GetResponseCode().GetValue() != 403 {
		return false
	}
	switch details {
	case "direct_response", // a route that answers 403 itself
		"upgrade_failed",         // an Upgrade the listener does not allow
		"connect_not_allowed",    // CONNECT is never allowed
		"filter_chain_not_found": // the connection's endpoint has no HTTP policy any more
		return true
	}
	return false
}

func socketAddr(a *corev3.Address) (netip.Addr, uint16) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return netip.Addr{}, 0
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return netip.Addr{}, uint16(sa.GetPortValue())
	}
	return ip.Unmap(), uint16(sa.GetPortValue())
}

func httpProtocol(v accesslogv3.HTTPAccessLogEntry_HTTPVersion) string {
	switch v {
	case accesslogv3.HTTPAccessLogEntry_HTTP10:
		return "HTTP/1.0"
	case accesslogv3.HTTPAccessLogEntry_HTTP11:
		return "HTTP/1.1"
	case accesslogv3.HTTPAccessLogEntry_HTTP2:
		return "HTTP/2"
	case accesslogv3.HTTPAccessLogEntry_HTTP3:
		return "HTTP/3"
	}
	return ""
}
