package flow

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func httpEntry(method corev3.RequestMethod, path string, code uint32, latency time.Duration, headers map[string]string) *accesslogv3.HTTPAccessLogEntry {
	return &accesslogv3.HTTPAccessLogEntry{
		CommonProperties: &accesslogv3.AccessLogCommon{
			DownstreamRemoteAddress:    sockAddr("10.0.0.1", 40000),
			DownstreamLocalAddress:     sockAddr("10.0.0.2", 8080),
			StartTime:                  timestamppb.New(t0),
			TimeToLastDownstreamTxByte: durationpb.New(latency),
		},
		ProtocolVersion: accesslogv3.HTTPAccessLogEntry_HTTP11,
		Request: &accesslogv3.HTTPRequestProperties{
			RequestMethod: method, Scheme: "http", Authority: "api.shop", Path: path, RequestHeaders: headers,
		},
		Response: &accesslogv3.HTTPResponseProperties{ResponseCode: wrapperspb.UInt32(code), ResponseCodeDetails: "via_upstream"},
	}
}

// flowSink collects flows and feeds the metrics.
type flowSink struct {
	mu    sync.Mutex
	flows []Flow
	m     *Metrics
}

func (s *flowSink) add(f Flow) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flows = append(s.flows, f)
	s.m.Process(f)
}

func (s *flowSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flows)
}

func TestAccessLogServiceGRPC(t *testing.T) {
	m, reg := newTestMetrics(t, "httpV2:exemplars=true;"+fullContext)
	sink := &flowSink{m: m}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	NewAccessLogServer(testEnricher, sink.add, nil).Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := alsv3.NewAccessLogServiceClient(conn)

	send := func(logName string, batches ...[]*accesslogv3.HTTPAccessLogEntry) {
		t.Helper()
		stream, err := client.StreamAccessLogs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range batches {
			msg := &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
				HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: b},
			}}
			if i == 0 { // Envoy sends the identifier only in the first message.
				msg.Identifier = &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "node-1"}, LogName: logName}
			}
			if err := stream.Send(msg); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := stream.CloseAndRecv(); err != nil {
			t.Fatalf("close stream: %v", err)
		}
	}
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	send("moat/egress-http/15001",
		[]*accesslogv3.HTTPAccessLogEntry{
			httpEntry(corev3.RequestMethod_GET, "/v1/items", 200, 30*time.Millisecond, map[string]string{"traceparent": "00-" + trace + "-00f067aa0ba902b7-01"}),
			httpEntry(corev3.RequestMethod_GET, "/v1/items", 200, 70*time.Millisecond, nil),
		},
		[]*accesslogv3.HTTPAccessLogEntry{httpEntry(corev3.RequestMethod_GET, "/admin", 403, time.Millisecond, nil)},
	)
	send("moat/ingress-http/15002",
		[]*accesslogv3.HTTPAccessLogEntry{httpEntry(corev3.RequestMethod_POST, "/v1/items", 201, 3*time.Second, nil)},
	)

	// CloseAndRecv returns after the server handled every message, but poll
	// with a deadline anyway rather than assume it.
	deadline := time.Now().Add(10 * time.Second)
	for sink.len() < 8 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sink.len(); got != 8 {
		t.Fatalf("sink got %d flows, want 8 (request and response per entry)", got)
	}

	const (
		dst = `destination_namespace="shop",destination_workload="api",`
		src = `source_namespace="shop",source_workload="frontend",`
	)
	want := `
# HELP hubble_http_requests_total Count of HTTP requests
# TYPE hubble_http_requests_total counter
hubble_http_requests_total{` + dst + `method="GET",protocol="HTTP/1.1",reporter="client",` + src + `status="200",traffic_direction="egress"} 2
hubble_http_requests_total{` + dst + `method="GET",protocol="HTTP/1.1",reporter="client",` + src + `status="403",traffic_direction="egress"} 1
hubble_http_requests_total{` + dst + `method="POST",protocol="HTTP/1.1",reporter="server",` + src + `status="201",traffic_direction="ingress"} 1
# HELP hubble_http_request_duration_seconds Quantiles of HTTP request duration in seconds
# TYPE hubble_http_request_duration_seconds histogram
` + histogram(dst+`method="GET",reporter="client",`+src+`traffic_direction="egress"`, []int{1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3}, "0.101", 3) +
		histogram(dst+`method="POST",reporter="server",`+src+`traffic_direction="ingress"`, []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, "3", 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "hubble_http_requests_total", "hubble_http_request_duration_seconds"); err != nil {
		t.Error(err)
	}

	sink.mu.Lock()
	defer sink.mu.Unlock()
	req, resp := sink.flows[0], sink.flows[1]
	if req.L7.Type != L7Request || req.Source.PodName != clientEP.PodName || req.Destination.PodName != serverEP.PodName || req.Reply != ReplyNo {
		t.Errorf("request flow = %+v", req)
	}
	if resp.L7.Type != L7Response || resp.Source.PodName != serverEP.PodName || resp.Reply != ReplyYes || resp.L4.DestinationPort != 40000 {
		t.Errorf("response flow = %+v", resp)
	}
	if req.TraceID != trace || req.NodeName != "node-1" || resp.L7.HTTP.URL != "http://api.shop/v1/items" {
		t.Errorf("trace %q node %q url %q", req.TraceID, req.NodeName, resp.L7.HTTP.URL)
	}
	if got := resp.Time.Sub(req.Time); got != 30*time.Millisecond {
		t.Errorf("response time - request time = %v, want 30ms", got)
	}
}

// histogram renders the expected exposition lines of one default-bucket
// histogram series; cum holds the cumulative bucket counts.
func histogram(labels string, cum []int, sum string, count int) string {
	les := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	var b strings.Builder
	for i, le := range les {
		b.WriteString("hubble_http_request_duration_seconds_bucket{" + labels + `,le="` + le + `"} ` + itoa(cum[i]) + "\n")
	}
	b.WriteString("hubble_http_request_duration_seconds_sum{" + labels + "} " + sum + "\n")
	b.WriteString("hubble_http_request_duration_seconds_count{" + labels + "} " + itoa(count) + "\n")
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestHTTPFlowsDenied(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(e *accesslogv3.HTTPAccessLogEntry)
		want   Verdict
		reason DropReason // for Dropped; default POLICY_DENIED
	}{
		{name: "upstream 403 is forwarded", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
		}, want: Forwarded},
		{name: "rbac denial", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
			e.Response.ResponseCodeDetails = "rbac_access_denied_matched_policy[none]"
		}, want: Dropped},
		{name: "direct response 403", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
			e.Response.ResponseCodeDetails = "direct_response"
		}, want: Dropped},
		{name: "upgrade refused", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
			e.Response.ResponseCodeDetails = "upgrade_failed"
		}, want: Dropped},
		{name: "filter chain gone", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
			e.Response.ResponseCodeDetails = "filter_chain_not_found"
		}, want: Dropped},
		{name: "upgrade_failed on another status is not a denial", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(503)
			e.Response.ResponseCodeDetails = "upgrade_failed"
		}, want: VerdictError},
		{name: "via upstream", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(400)
			e.Response.ResponseCodeDetails = "via_upstream"
		}, want: Forwarded},
		{name: "upstream reset after the response started", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCodeDetails = "upstream_reset_after_response_started"
		}, want: Forwarded},
		{name: "ambiguous path rejected", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(400)
			e.Response.ResponseCodeDetails = "path_ambiguous_rejected"
		}, want: Dropped, reason: DropInvalidPacket},
		{name: "path normalisation failed", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(400)
			e.Response.ResponseCodeDetails = "path_normalization_failed"
		}, want: Dropped, reason: DropInvalidPacket},
		{name: "underscore header", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(400)
			e.Response.ResponseCodeDetails = "http1.unexpected_underscore"
		}, want: Dropped, reason: DropInvalidPacket},
		{name: "connect refused", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(403)
			e.Response.ResponseCodeDetails = "connect_not_allowed"
		}, want: Dropped},
		{name: "escaped slash redirect", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(307)
			e.Response.ResponseCodeDetails = "path_with_escaped_slashes_redirected"
		}, want: Redirected},
		{name: "direct response", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(200)
			e.Response.ResponseCodeDetails = "direct_response"
		}, want: Redirected},
		{name: "upstream connect failure", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(503)
			e.Response.ResponseCodeDetails = "upstream_reset_before_response_started{connection_failure}"
		}, want: VerdictError},
		{name: "no cluster", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.Response.ResponseCode = wrapperspb.UInt32(503)
			e.Response.ResponseCodeDetails = "cluster_not_found"
		}, want: VerdictError},
		{name: "unauthorized flag", mutate: func(e *accesslogv3.HTTPAccessLogEntry) {
			e.CommonProperties.ResponseFlags = &accesslogv3.ResponseFlags{UnauthorizedDetails: &accesslogv3.ResponseFlags_Unauthorized{}}
		}, want: Dropped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := httpEntry(corev3.RequestMethod_GET, "/", 200, time.Millisecond, nil)
			tt.mutate(e)
			req, resp := HTTPFlows(e, Egress, "n", nil)
			if req.Verdict != tt.want {
				t.Errorf("request verdict = %v, want %v", req.Verdict, tt.want)
			}
			wantReason := DropReason("")
			if tt.want == Dropped {
				wantReason = DropPolicyDenied
				if tt.reason != "" {
					wantReason = tt.reason
				}
			}
			if req.DropReason != wantReason {
				t.Errorf("drop reason = %q, want %q", req.DropReason, wantReason)
			}
			if resp.Verdict != Forwarded {
				t.Errorf("response verdict = %v, want FORWARDED", resp.Verdict)
			}
		})
	}
}

func TestHTTPFlowsAddresses(t *testing.T) {
	e := httpEntry(corev3.RequestMethod_PUT, "/x", 200, time.Millisecond, nil)
	e.CommonProperties.DownstreamRemoteAddress = sockAddr("::ffff:10.0.0.9", 1234)
	e.CommonProperties.DownstreamLocalAddress = sockAddr("fd00::2", 80)
	e.ProtocolVersion = accesslogv3.HTTPAccessLogEntry_HTTP2
	req, _ := HTTPFlows(e, DirectionUnknown, "", testEnricher)
	if got := req.Source.IP.String(); got != "10.0.0.9" {
		t.Errorf("4in6 client address = %s, want 10.0.0.9", got)
	}
	if req.IPVersion != IPv4 || req.L7.HTTP.Protocol != "HTTP/2" || req.L7.HTTP.Method != "PUT" {
		t.Errorf("ip version %v protocol %q method %q", req.IPVersion, req.L7.HTTP.Protocol, req.L7.HTTP.Method)
	}
	if req.Source.Namespace != "" {
		t.Errorf("unknown address was enriched: %+v", req.Source)
	}
}

func TestDirectionFromLogName(t *testing.T) {
	tests := []struct {
		in   string
		want TrafficDirection
	}{
		{"moat/egress-http/15001", Egress},
		{"moat/ingress-http/15002", Ingress},
		{"egress", Egress},
		{"moat/http/15001", DirectionUnknown},
		{"moat/egressive/1", DirectionUnknown},
		{"", DirectionUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := DirectionFromLogName(tt.in); got != tt.want {
				t.Errorf("DirectionFromLogName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestTraceIDFromTraceparent(t *testing.T) {
	tests := []struct{ in, want string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""},
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"00-4bf92f35-00f067aa0ba902b7-01", ""},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := TraceIDFromTraceparent(tt.in); got != tt.want {
				t.Errorf("TraceIDFromTraceparent(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
