package flow

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMetricsConfig(t *testing.T) {
	const httpOpts = "httpV2:exemplars=true;labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction"
	wantFull := MetricsConfig{
		{Name: "dns", Options: map[string]string{}},
		{Name: "drop", Options: map[string]string{}},
		{Name: "tcp", Options: map[string]string{}},
		{Name: "flow", Options: map[string]string{}},
		{Name: "port-distribution", Options: map[string]string{}},
		{Name: "icmp", Options: map[string]string{}},
		{Name: "httpV2", Options: map[string]string{
			"exemplars":     "true",
			"labelscontext": "source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction",
		}},
	}
	tests := []struct {
		name string
		in   string
		want MetricsConfig
	}{
		{name: "semicolon separated", in: "dns;drop;tcp;flow;port-distribution;icmp;" + httpOpts, want: wantFull},
		{name: "space separated like the Hubble ConfigMap", in: "dns drop tcp flow port-distribution icmp " + httpOpts, want: wantFull},
		{name: "mixed with newlines", in: "dns;drop\n tcp flow;port-distribution icmp\t" + httpOpts + ";", want: wantFull},
		{name: "empty", in: "  ", want: nil},
		{name: "flag options and case-insensitive keys", in: "dns:query;ignoreAAAA;LabelsContext=source_pod flow", want: MetricsConfig{
			{Name: "dns", Options: map[string]string{"query": "", "ignoreaaaa": "", "labelscontext": "source_pod"}},
			{Name: "flow", Options: map[string]string{}},
		}},
		{name: "source and destination context", in: "tcp:sourceContext=pod|ip;destinationContext=namespace", want: MetricsConfig{
			{Name: "tcp", Options: map[string]string{"sourcecontext": "pod|ip", "destinationcontext": "namespace"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMetricsConfig(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseMetricsConfig(%q) (-want +got):\n%s", tt.in, diff)
			}
			// The String form parses back to the same configuration.
			again, err := ParseMetricsConfig(got.String())
			if err != nil {
				t.Fatalf("reparse %q: %v", got.String(), err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("reparse of %q differs (-first +second):\n%s", got.String(), diff)
			}
		})
	}
}

func TestParseMetricsList(t *testing.T) {
	got, err := ParseMetricsList([]string{"dns:query", "httpV2:exemplars=true;labelsContext=source_namespace"})
	if err != nil {
		t.Fatal(err)
	}
	want := MetricsConfig{
		{Name: "dns", Options: map[string]string{"query": ""}},
		{Name: "httpV2", Options: map[string]string{"exemplars": "true", "labelscontext": "source_namespace"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseMetricsConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{name: "unknown handler", in: "dns;http", want: `unknown handler "http" (known: dns, drop, flow, httpV2, icmp, port-distribution, tcp)`},
		{name: "unknown handler with options", in: "kafka:labelsContext=source_pod", want: `unknown handler "kafka"`},
		{name: "unknown option", in: "httpV2:exemplar=true", want: `handler httpV2: unknown option "exemplar" (known: labelscontext, sourcecontext, destinationcontext, exemplars)`},
		{name: "flag of another handler", in: "drop:query", want: `handler drop: unknown option "query" (known: labelscontext, sourcecontext, destinationcontext)`},
		{name: "bare word after handler", in: "drop;query", want: `unknown handler "query"`},
		{name: "option of another handler with value", in: "drop:exemplars=true", want: `handler drop: unknown option "exemplars"`},
		{name: "unknown context label", in: "httpV2:labelsContext=source_namespace,source_cluster", want: `handler httpV2: labelsContext: unknown label "source_cluster" (known: source_ip, source_pod`},
		{name: "unknown context identifier", in: "tcp:sourceContext=pod|cluster", want: `handler tcp: sourceContext: unknown context "cluster"`},
		{name: "option before handler", in: "labelsContext=source_pod", want: `option "labelsContext=source_pod" comes before any handler`},
		{name: "duplicate handler", in: "dns drop dns", want: `handler "dns" given twice`},
		{name: "duplicate option", in: "httpV2:exemplars=true;exemplars=false", want: `option "exemplars" given twice`},
		{name: "missing value", in: "httpV2:labelsContext", want: `option "labelsContext" needs a value`},
		{name: "bad exemplars value", in: "httpV2:exemplars=yes", want: `exemplars="yes": want true or false`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMetricsConfig(tt.in)
			if err == nil {
				t.Fatalf("ParseMetricsConfig(%q) succeeded, want error containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseMetricsConfig(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestShortPodName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"frontend-7d9f8b6c4-abcde", "frontend"},
		{"coredns-0", "coredns"},
		{"a-b-c-d", "a-b"},
		{"single", "single"},
		{"Upper-ABC", "Upper-ABC"},
		{"-x", "-x"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := shortPodName(tt.in); got != tt.want {
				t.Errorf("shortPodName(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
