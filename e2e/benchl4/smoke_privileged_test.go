package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatnet/moat/internal/testutil"
)

// TestPrivilegedBenchL4Smoke runs the whole harness with tiny durations and
// sizes, so that it cannot rot: every row of the report must carry positive
// values, the JSON must match the table, and nothing may be left behind.
func TestPrivilegedBenchL4Smoke(t *testing.T) {
	testutil.Privileged(t)
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	prefix := "mbsmoke-"
	pinRoot := "/sys/fs/bpf/moat-bench-smoke"
	var stdout, stderr bytes.Buffer
	err := mainErr([]string{"-quick", "-json", jsonPath, "-netns-prefix", prefix, "-pin-root", pinRoot}, &stdout, &stderr)
	t.Logf("report:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("benchl4: %v\nlog:\n%s", err, stderr.String())
	}

	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatalf("read json report: %v", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode json report: %v", err)
	}
	quick := DefaultConfig().Quick()
	wantMetrics := []string{metricHTTP, metricTCP, metricUDP, metricNsHTTP, metricNsUDP, metricReplace, metricIptLoad}
	for _, n := range quick.Rules {
		for _, m := range wantMetrics {
			row, ok := findRow(rep.Rows, m, n)
			if !ok {
				t.Errorf("report lacks row %q at %d rules", m, n)
				continue
			}
			vals := row.Values()
			if len(vals) == 0 {
				t.Errorf("row %q at %d rules has no value", m, n)
			}
			for _, v := range vals {
				if !(v > 0) {
					t.Errorf("row %q at %d rules: value %v, want > 0", m, n, v)
				}
			}
		}
		for _, m := range []string{metricHTTP, metricTCP} {
			if row, _ := findRow(rep.Rows, m, n); row.BA == nil || row.CA == nil {
				t.Errorf("row %q at %d rules lacks b/a or c/a", m, n)
			}
		}
	}
	if len(rep.Goals) == 0 {
		t.Error("report has no goals")
	}
	for _, g := range rep.Goals {
		if g.Status != "PASS" && g.Status != "MISS" {
			t.Errorf("goal %q: status %s, want PASS or MISS with two sizes", g.Name, g.Status)
		}
	}
	if !strings.Contains(stdout.String(), metricReplace) {
		t.Errorf("printed table lacks %q", metricReplace)
	}

	// Nothing left behind.
	if _, err := os.Stat(pinRoot); !os.IsNotExist(err) {
		t.Errorf("pin root %s still exists (err %v)", pinRoot, err)
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
}
