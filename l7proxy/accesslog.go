package l7proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// accessLogBatch bounds the entries sent in one message.
const accessLogBatch = 64

// accessLogger streams HTTP access-log entries to the gRPC access-log
// service, one stream per log name (the first message of each stream names
// the node and the log), as Envoy's http_grpc logger does. Entries wait in
// a bounded queue; when it is full, or the service is unreachable, they are
// dropped and counted: logging never holds up traffic.
type accessLogger struct {
	target string
	node   *corev3.Node
	queue  chan alsItem
	logger *slog.Logger
	m      *metrics
}

type alsItem struct {
	logName string
	entry   *accesslogv3.HTTPAccessLogEntry
}

func newAccessLogger(target string, node *corev3.Node, queue int, logger *slog.Logger, m *metrics) *accessLogger {
	return &accessLogger{target: target, node: node, queue: make(chan alsItem, queue), logger: logger, m: m}
}

// log builds the entry of an exchange and queues it for every access log
// of the connection manager.
func (a *accessLogger) log(ex *exchange, r *http.Request, rec *recorder, status int, end time.Time) {
	for _, spec := range ex.chain.hcm.accessLogs {
		e := buildEntry(ex, r, rec, status, end, spec)
		select {
		case a.queue <- alsItem{logName: spec.logName, entry: e}:
		default:
			a.m.accessLogDropped.WithLabelValues("queue_full").Inc()
		}
	}
}

func buildEntry(ex *exchange, r *http.Request, rec *recorder, status int, end time.Time, spec accessLogSpec) *accesslogv3.HTTPAccessLogEntry {
	d := end.Sub(ex.start)
	common := &accesslogv3.AccessLogCommon{
		DownstreamRemoteAddress:       addrProto(ex.source),
		DownstreamLocalAddress:        addrProto(ex.dest),
		DownstreamDirectRemoteAddress: addrProto(ex.source),
		StartTime:                     timestamppb.New(ex.start),
		TimeToLastDownstreamTxByte:    durationpb.New(d),
		Duration:                      durationpb.New(d),
		UpstreamCluster:               ex.cluster,
		RouteName:                     ex.route,
	}
	if ex.upAddr != "" {
		if ap, err := netip.ParseAddrPort(ex.upAddr); err == nil {
			common.UpstreamRemoteAddress = addrProto(ap)
		}
	}
	if ex.upLocal.IsValid() {
		common.UpstreamLocalAddress = addrProto(ex.upLocal)
	}
	req := &accesslogv3.HTTPRequestProperties{
		RequestMethod:       corev3.RequestMethod(corev3.RequestMethod_value[r.Method]),
		Scheme:              "http",
		Authority:           r.Host,
		Path:                ex.req.path,
		UserAgent:           r.UserAgent(),
		RequestHeadersBytes: 0,
	}
	if ex.req.query != "" && ex.req.path != "" {
		req.Path += "?" + ex.req.query
	}
	if r.ContentLength > 0 {
		req.RequestBodyBytes = uint64(r.ContentLength)
	}
	for _, h := range spec.requestHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			if req.RequestHeaders == nil {
				req.RequestHeaders = map[string]string{}
			}
			req.RequestHeaders[h] = v[0]
		}
	}
	resp := &accesslogv3.HTTPResponseProperties{
		ResponseCode:        wrapperspb.UInt32(uint32(status)),
		ResponseCodeDetails: ex.details,
		ResponseBodyBytes:   uint64(rec.bytes),
	}
	for _, h := range spec.responseHeader {
		if v := rec.Header().Values(h); len(v) > 0 {
			if resp.ResponseHeaders == nil {
				resp.ResponseHeaders = map[string]string{}
			}
			resp.ResponseHeaders[h] = v[0]
		}
	}
	e := &accesslogv3.HTTPAccessLogEntry{CommonProperties: common, Request: req, Response: resp}
	switch {
	case r.ProtoMajor == 2:
		e.ProtocolVersion = accesslogv3.HTTPAccessLogEntry_HTTP2
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		e.ProtocolVersion = accesslogv3.HTTPAccessLogEntry_HTTP10
	default:
		e.ProtocolVersion = accesslogv3.HTTPAccessLogEntry_HTTP11
	}
	return e
}

func addrProto(ap netip.AddrPort) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       ap.Addr().Unmap().String(),
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

// run sends queued entries until ctx ends.
func (a *accessLogger) run(ctx context.Context) error {
	target, err := grpcTarget(a.target)
	if err != nil {
		return fmt.Errorf("dial access-log service: %w", err)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial access-log service %s: %w", a.target, err)
	}
	defer conn.Close()
	client := alsv3.NewAccessLogServiceClient(conn)
	streams := map[string]alsv3.AccessLogService_StreamAccessLogsClient{}
	defer func() {
		for _, s := range streams {
			_, _ = s.CloseAndRecv()
		}
	}()
	for {
		var first alsItem
		select {
		case <-ctx.Done():
			return nil
		case first = <-a.queue:
		}
		batch := map[string][]*accesslogv3.HTTPAccessLogEntry{first.logName: {first.entry}}
		n := 1
	fill:
		for n < accessLogBatch {
			select {
			case it := <-a.queue:
				batch[it.logName] = append(batch[it.logName], it.entry)
				n++
			default:
				break fill
			}
		}
		for name, entries := range batch {
			if err := a.send(ctx, client, streams, name, entries); err != nil {
				a.m.accessLogDropped.WithLabelValues("send_failed").Add(float64(len(entries)))
				a.logger.Debug("send access log entries", "log_name", name, "entries", len(entries), "error", err)
			}
		}
	}
}

func (a *accessLogger) send(ctx context.Context, client alsv3.AccessLogServiceClient, streams map[string]alsv3.AccessLogService_StreamAccessLogsClient, name string, entries []*accesslogv3.HTTPAccessLogEntry) error {
	msg := &alsv3.StreamAccessLogsMessage{LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{
		HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{LogEntry: entries},
	}}
	for attempt := 0; attempt < 2; attempt++ {
		s := streams[name]
		if s == nil {
			var err error
			s, err = client.StreamAccessLogs(ctx)
			if err != nil {
				return fmt.Errorf("open access-log stream: %w", err)
			}
			streams[name] = s
			msg.Identifier = &alsv3.StreamAccessLogsMessage_Identifier{Node: a.node, LogName: name}
		} else {
			msg.Identifier = nil
		}
		err := s.Send(msg)
		if err == nil {
			return nil
		}
		delete(streams, name)
		if attempt == 1 {
			return fmt.Errorf("send access-log entries: %w", err)
		}
	}
	return nil
}
