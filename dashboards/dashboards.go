package dashboards

import (
	"encoding/json"
	"fmt"
)

// HubbleMetrics is the Hubble handler configuration (the agent's
// `metrics`, Hubble's option syntax) under which every panel can have
// data: the handlers of moat's default and the chart's documented install
// line, plus the context labels and the DNS query label that the
// per-workload, per-direction and per-name panels group by. With fewer
// labels those panels still work, with the missing labels empty.
var HubbleMetrics = []string{
	"dns:query;labelsContext=source_namespace,source_workload,destination_namespace,destination_workload",
	"drop:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload,traffic_direction",
	"tcp:labelsContext=source_namespace,source_workload,destination_namespace,destination_workload",
	"flow", "port-distribution", "icmp",
	"httpV2:exemplars=true;labelsContext=source_ip,source_namespace,source_workload,destination_ip,destination_namespace,destination_workload,traffic_direction",
}

// boards lists every dashboard, in the order they are generated.
func boards() []board {
	return []board{l7HTTP(), dnsBoard(), policyBoard(), tcpBoard(), agentBoard(), operatorBoard()}
}

// Render builds every dashboard and returns its JSON by file name: indented,
// with a final newline, byte-for-byte what charts/moat/dashboards holds.
func Render() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, b := range boards() {
		d, err := build(b)
		if err != nil {
			return nil, err
		}
		js, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", b.file, err)
		}
		if _, dup := out[b.file]; dup {
			return nil, fmt.Errorf("two dashboards write %s", b.file)
		}
		out[b.file] = append(js, '\n')
	}
	return out, nil
}
