package dashboards

import (
	"encoding/json"
	"fmt"
)

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
