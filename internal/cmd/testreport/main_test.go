package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// ev builds one go test -json line.
func ev(action, pkg, test, output string) string {
	b, _ := json.Marshal(event{Action: action, Package: pkg, Test: test, Output: output})
	return string(b) + "\n"
}

func TestReport(t *testing.T) {
	const pkg = "github.com/moatnet/moat/datapath"
	const e2e = "github.com/moatnet/moat/e2e"
	passing := ev("run", pkg, "TestA", "") + ev("output", pkg, "TestA", "=== RUN   TestA\n") + ev("pass", pkg, "TestA", "") +
		ev("pass", pkg, "", "")
	cases := []struct {
		name     string
		in       string
		env      map[string]string
		wantCode int
		wantLast string
		want     []string // substrings of the output
		dontWant []string
	}{
		{name: "all pass", in: passing, wantLast: "1 passed, 0 failed, 0 skipped",
			want: []string{"ok  \t" + pkg}, dontWant: []string{"=== RUN"}},
		{name: "failure shows its output", wantCode: 1, wantLast: "1 passed, 1 failed, 0 skipped",
			in:   passing + ev("run", pkg, "TestB", "") + ev("output", pkg, "TestB", "    b_test.go:9: boom\n") + ev("fail", pkg, "TestB", "") + ev("fail", pkg, "", ""),
			want: []string{"b_test.go:9: boom", "FAIL\t" + pkg}},
		{name: "helper-style skip is not allowed", wantCode: 1, wantLast: "1 passed, 0 failed, 1 skipped",
			in:   passing + ev("run", pkg, "TestHelperProcess", "") + ev("output", pkg, "TestHelperProcess", "    x_test.go:3: helper process\n") + ev("skip", pkg, "TestHelperProcess", ""),
			want: []string{"SKIP " + pkg + " TestHelperProcess (NOT ALLOWED): x_test.go:3: helper process", "not on the allowlist"}},
		{name: "privileged skip allowed without the variable", wantLast: "1 passed, 0 failed, 1 skipped",
			in:   passing + ev("run", pkg, "TestPrivilegedX", "") + ev("skip", pkg, "TestPrivilegedX", ""),
			want: []string{"allowed: privileged tests need"}},
		{name: "privileged skip fails with the variable set", wantCode: 1, env: map[string]string{"MOAT_PRIVILEGED_TESTS": "1"},
			wantLast: "1 passed, 0 failed, 1 skipped",
			in:       passing + ev("run", pkg, "TestPrivilegedX", "") + ev("skip", pkg, "TestPrivilegedX", ""),
			want:     []string{"TestPrivilegedX (NOT ALLOWED)"}},
		{name: "envoy binary skip allowed in e2e only", wantCode: 1, wantLast: "1 passed, 0 failed, 2 skipped",
			in:   passing + ev("skip", e2e, "TestEnvoyBinaryMatrix", "") + ev("skip", pkg, "TestEnvoyBinaryMatrix", ""),
			want: []string{"SKIP " + e2e + " TestEnvoyBinaryMatrix (allowed", "SKIP " + pkg + " TestEnvoyBinaryMatrix (NOT ALLOWED)"}},
		{name: "cluster skip allowed without MOAT_CLUSTER_TESTS, in e2e/cluster only", wantCode: 1, wantLast: "1 passed, 0 failed, 2 skipped",
			in:   passing + ev("skip", e2e+"/cluster", "TestClusterDataPlane", "") + ev("skip", e2e, "TestClusterDataPlane", ""),
			want: []string{"SKIP " + e2e + "/cluster TestClusterDataPlane (allowed", "SKIP " + e2e + " TestClusterDataPlane (NOT ALLOWED)"}},
		{name: "cluster skip fails with MOAT_CLUSTER_TESTS=1", wantCode: 1, env: map[string]string{"MOAT_CLUSTER_TESTS": "1"},
			wantLast: "1 passed, 0 failed, 1 skipped",
			in:       passing + ev("skip", e2e+"/cluster", "TestClusterDataPlane", ""),
			want:     []string{"TestClusterDataPlane (NOT ALLOWED)"}},
		{name: "timeout: running test reported, package output shown", wantCode: 1, wantLast: "1 passed, 1 failed, 0 skipped",
			in:   passing + ev("run", pkg, "TestHang", "") + ev("output", pkg, "", "panic: test timed out after 20m0s\n") + ev("fail", pkg, "", ""),
			want: []string{"panic: test timed out", "--- FAIL: TestHang (did not finish)"}},
		{name: "nothing ran", in: "", wantCode: 1, wantLast: "0 passed, 0 failed, 0 skipped", want: []string{"no test ran"}},
		{name: "garbage input fails", wantCode: 1, wantLast: "1 passed, 0 failed, 0 skipped",
			in: passing + "# github.com/x [github.com/x.test]\n", want: []string{"1 line(s) of input were not go test -json events"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code := run(strings.NewReader(tc.in), &out, func(k string) string { return tc.env[k] })
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d\n%s", code, tc.wantCode, out.String())
			}
			lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
			if last := lines[len(lines)-1]; last != tc.wantLast {
				t.Errorf("last line %q, want %q", last, tc.wantLast)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}
