package flow

import (
	"encoding/json"
	"go/build"
	"strings"
	"testing"
	"time"
)

func TestFlowJSON(t *testing.T) {
	tests := []struct {
		name string
		flow Flow
		want string
	}{
		{
			name: "dropped tcp",
			flow: tcpFlow(Dropped, SYN, ReplyNo),
			want: `{"time":"2026-01-02T03:04:05Z","verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","Type":"L3_L4","event_type":"Drop",` +
				`"IP":{"source":"10.0.0.1","destination":"10.0.0.2","ipVersion":"IPv4"},` +
				`"l4":{"protocol":"TCP","source_port":40000,"destination_port":8080,"flags":["SYN"]},` +
				`"source":{"identity":256,"namespace":"shop","pod_name":"frontend-7d9f8b6c4-abcde","workload":"frontend","app":"frontend","labels":["k8s:app=frontend","k8s:io.kubernetes.pod.namespace=shop"]},` +
				`"destination":{"identity":257,"namespace":"shop","pod_name":"api-5c6d7f8b9-xyz12","workload":"api","app":"api","labels":["k8s:app=api","k8s:io.kubernetes.pod.namespace=shop"]},` +
				`"traffic_direction":"EGRESS","is_reply":false}`,
		},
		{
			name: "http response",
			flow: func() Flow {
				f := httpResponse(Ingress, "GET", 200, 1500*time.Microsecond, "4bf92f3577b34da6a3ce929d0e0e4736")
				f.Source, f.Destination = Endpoint{IP: f.Source.IP}, Endpoint{IP: f.Destination.IP}
				return f
			}(),
			want: `{"time":"2026-01-02T03:04:05Z","verdict":"FORWARDED","Type":"L7","event_type":"L7",` +
				`"IP":{"source":"10.0.0.2","destination":"10.0.0.1","ipVersion":"IPv4"},` +
				`"l4":{"protocol":"TCP","source_port":8080,"destination_port":40000},` +
				`"traffic_direction":"INGRESS","is_reply":true,` +
				`"l7":{"type":"RESPONSE","latency_ns":1500000,"http":{"code":200,"method":"GET","url":"http://api.shop/v1/items","host":"api.shop","protocol":"HTTP/1.1","reporter":"server"}},` +
				`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}`,
		},
		{
			name: "icmp echo with unknown reply state",
			flow: func() Flow {
				f := icmpFlow(ProtoICMPv4, 8, 0)
				f.Reply = ReplyUnknown
				f.Source, f.Destination = Endpoint{}, Endpoint{}
				return f
			}(),
			want: `{"time":"2026-01-02T03:04:05Z","verdict":"FORWARDED","Type":"L3_L4","event_type":"Trace","trace_observation_point":"to-stack",` +
				`"IP":{"ipVersion":"IPv4"},"l4":{"protocol":"ICMPv4","icmp_type":8,"icmp_code":0},"traffic_direction":"EGRESS"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.flow)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("json:\n got %s\nwant %s", b, tt.want)
			}
		})
	}
}

func TestVerdictText(t *testing.T) {
	for _, v := range []Verdict{Forwarded, Dropped, VerdictError, Audit, Redirected, Traced, Translated} {
		t.Run(v.String(), func(t *testing.T) {
			var got Verdict
			if err := got.UnmarshalText([]byte(strings.ToLower(v.String()))); err != nil || got != v {
				t.Errorf("round trip of %v = %v, %v", v, got, err)
			}
		})
	}
	if _, err := ParseVerdict("ALLOWED"); err == nil {
		t.Error("ParseVerdict accepted ALLOWED")
	}
}

// TestImports keeps flow away from the packages it must not depend on.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []string{"datapath", "envoy", "xds", "dnsproxy", "l7proxy", "agent", "k8s"}
	for _, imp := range append(pkg.Imports, pkg.TestImports...) {
		for _, f := range forbidden {
			if strings.HasPrefix(imp, "github.com/moatnet/moat/"+f) {
				t.Errorf("flow imports %s", imp)
			}
		}
	}
}
