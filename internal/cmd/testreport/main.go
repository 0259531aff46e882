package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// allowedSkips are the only skips CI tolerates. Keep this list short and
// say why each entry cannot run everywhere.
var allowedSkips = []struct {
	pkg, prefix string // package import path suffix ("" any), test name prefix
	onlyWithout string // allowed only when this environment variable is not "1"
	why         string
}{
	// Privileged tests need root, bpffs and netns; a developer's plain `make
	// test` skips them. CI sets MOAT_PRIVILEGED_TESTS=1, and then a skipped
	// privileged test is a failure like any other.
	{prefix: "TestPrivileged", onlyWithout: "MOAT_PRIVILEGED_TESTS", why: "privileged tests need MOAT_PRIVILEGED_TESTS=1 and root"},
	// Envoy cannot be installed on the development and CI machines; the
	// same matrix runs against the embedded proxy in every run.
	{pkg: "/e2e", prefix: "TestEnvoyBinary", why: "needs an Envoy binary in ENVOY_BIN"},
	// The cluster suite needs a running multi-node cluster; make test runs
	// before make cluster-up, and make e2e-cluster runs it with
	// MOAT_CLUSTER_TESTS=1, where a missing cluster fails.
	{pkg: "/e2e/cluster", prefix: "TestCluster", onlyWithout: "MOAT_CLUSTER_TESTS", why: "needs a cluster: KUBECONFIG (make cluster-up; make e2e-cluster)"},
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type testKey struct{ pkg, test string }

type report struct {
	out     io.Writer
	getenv  func(string) string
	output  map[testKey][]string // buffered output per test ("" test: package)
	running map[testKey]bool
	passed  int
	failed  []testKey
	skipped []skip
	pkgFail []string
	bad     int // non-allowlisted skips
}

type skip struct {
	key     testKey
	reason  string
	allowed string // why it is allowed; "" when it is not
}

func newReport(out io.Writer, getenv func(string) string) *report {
	return &report{out: out, getenv: getenv, output: map[testKey][]string{}, running: map[testKey]bool{}}
}

// allowed returns why a skip of k is tolerated, or "".
func (r *report) allowed(k testKey) string {
	for _, a := range allowedSkips {
		if a.pkg != "" && !strings.HasSuffix(k.pkg, a.pkg) {
			continue
		}
		if !strings.HasPrefix(k.test, a.prefix) {
			continue
		}
		if a.onlyWithout != "" && r.getenv(a.onlyWithout) == "1" {
			continue
		}
		return a.why
	}
	return ""
}

// skipReason picks the skip message out of a test's output.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		msg = append(msg, t)
	}
	return strings.Join(msg, " ")
}

func (r *report) handle(e event) {
	k := testKey{e.Package, e.Test}
	switch e.Action {
	case "run":
		r.running[k] = true
	case "output", "build-output":
		r.output[k] = append(r.output[k], e.Output)
	case "pass", "fail", "skip":
		delete(r.running, k)
		if e.Test == "" {
			r.packageDone(e)
			return
		}
		switch e.Action {
		case "pass":
			r.passed++
		case "fail":
			r.failed = append(r.failed, k)
			for _, l := range r.output[k] {
				fmt.Fprint(r.out, l)
			}
		case "skip":
			s := skip{key: k, reason: skipReason(r.output[k]), allowed: r.allowed(k)}
			if s.allowed == "" {
				r.bad++
			}
			r.skipped = append(r.skipped, s)
		}
		delete(r.output, k)
	}
}

func (r *report) packageDone(e event) {
	k := testKey{e.Package, ""}
	switch e.Action {
	case "pass":
		fmt.Fprintf(r.out, "ok  \t%s\t%.3fs\n", e.Package, e.Elapsed)
	case "skip":
		fmt.Fprintf(r.out, "?   \t%s\t[no test files]\n", e.Package)
	case "fail":
		// Package output holds panics, timeouts, TestMain and build errors.
		for _, l := range r.output[k] {
			fmt.Fprint(r.out, l)
		}
		for rk := range r.running {
			if rk.pkg == e.Package {
				fmt.Fprintf(r.out, "--- FAIL: %s (did not finish)\n", rk.test)
				r.failed = append(r.failed, rk)
				delete(r.running, rk)
			}
		}
		fmt.Fprintf(r.out, "FAIL\t%s\n", e.Package)
		r.pkgFail = append(r.pkgFail, e.Package)
	}
	delete(r.output, k)
}

// finish prints the summary and returns the exit code.
func (r *report) finish(unparsed int) int {
	sort.Slice(r.skipped, func(i, j int) bool {
		a, b := r.skipped[i].key, r.skipped[j].key
		return a.pkg+" "+a.test < b.pkg+" "+b.test
	})
	for _, s := range r.skipped {
		verdict := "NOT ALLOWED"
		if s.allowed != "" {
			verdict = "allowed: " + s.allowed
		}
		fmt.Fprintf(r.out, "SKIP %s %s (%s): %s\n", s.key.pkg, s.key.test, verdict, s.reason)
	}
	code := 0
	if len(r.failed) > 0 || len(r.pkgFail) > 0 {
		fmt.Fprintf(r.out, "FAILED: %d test(s) in %d package(s)\n", len(r.failed), len(r.pkgFail))
		code = 1
	}
	if r.bad > 0 {
		fmt.Fprintf(r.out, "FAILED: %d skipped test(s) not on the allowlist (internal/cmd/testreport): a skip must not hide a test\n", r.bad)
		code = 1
	}
	if unparsed > 0 {
		fmt.Fprintf(r.out, "FAILED: %d line(s) of input were not go test -json events\n", unparsed)
		code = 1
	}
	if r.passed+len(r.failed)+len(r.skipped) == 0 {
		fmt.Fprintln(r.out, "FAILED: no test ran")
		code = 1
	}
	fmt.Fprintf(r.out, "%d passed, %d failed, %d skipped\n", r.passed, len(r.failed), len(r.skipped))
	return code
}

// run reads events from in and writes the report to out.
func run(in io.Reader, out io.Writer, getenv func(string) string) int {
	r := newReport(out, getenv)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	unparsed := 0
	for sc.Scan() {
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var e event
		if line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// go test prints build failures of packages without
			// test2json framing; show them and fail.
			fmt.Fprintf(out, "%s\n", line)
			unparsed++
			continue
		}
		r.handle(e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(out, "read go test -json: %v\n", err)
		unparsed++
	}
	return r.finish(unparsed)
}

func main() {
	os.Exit(run(os.Stdin, os.Stdout, os.Getenv))
}
