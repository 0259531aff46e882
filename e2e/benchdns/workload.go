package main

// workload.go owns dnsperf: its command line, and reading its statistics
// and (with -v) every query's latency from its output.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// perfResult is one dnsperf run.
type perfResult struct {
	Sent, Completed, Lost int
	QPS                   float64
	AvgLatency            time.Duration
	// Rcodes counts responses by rcode mnemonic.
	Rcodes map[string]int
	// Latencies (verbose runs only), sorted.
	Latencies []time.Duration
	// CPU is dnsperf's own user+system time.
	CPU time.Duration
}

// dnsperfArgs is the command line: a max-throughput run (rate 0) or a
// fixed-rate verbose run.
func dnsperfArgs(netns string, server string, file string, d time.Duration, rate, clients, outstanding int) []string {
	args := []string{"netns", "exec", netns, "dnsperf", "-s", server, "-d", file,
		"-l", strconv.Itoa(int(d / time.Second)), "-t", "2", "-T", "1"}
	if rate > 0 {
		// Fixed rate: a few clients and enough outstanding queries that
		// the limit is the rate, not the window.
		return append(args, "-Q", strconv.Itoa(rate), "-c", "4", "-q", "1000", "-v")
	}
	return append(args, "-c", strconv.Itoa(clients), "-q", strconv.Itoa(outstanding))
}

// runDNSPerf runs dnsperf (through `ip netns exec`) and parses its output.
func runDNSPerf(ctx context.Context, args []string) (*perfResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("run dnsperf %s: %w: %s", strings.Join(args[3:], " "), err, tail(stderr.String()+stdout.String(), 600))
	}
	res, err := parseDNSPerf(&stdout)
	if err != nil {
		return nil, fmt.Errorf("parse dnsperf output: %w: %s", err, tail(stdout.String(), 600))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
		// ip netns exec execs dnsperf: the rusage is dnsperf's.
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return res, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// parseDNSPerf reads dnsperf's statistics block and, in verbose output,
// the "> RCODE name type latency" lines.
func parseDNSPerf(r io.Reader) (*perfResult, error) {
	res := &perfResult{Rcodes: map[string]int{}}
	var seen int
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "> ") {
			f := strings.Fields(line[2:])
			if len(f) >= 2 && f[0] != "T" && f[0] != "I" {
				if sec, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
					res.Latencies = append(res.Latencies, time.Duration(sec*float64(time.Second)))
				}
			}
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		first := v
		if i := strings.IndexByte(v, ' '); i >= 0 {
			first = v[:i]
		}
		var err error
		switch k {
		case "Queries sent":
			res.Sent, err = strconv.Atoi(first)
			seen++
		case "Queries completed":
			res.Completed, err = strconv.Atoi(first)
			seen++
		case "Queries lost":
			res.Lost, err = strconv.Atoi(first)
		case "Queries per second":
			res.QPS, err = strconv.ParseFloat(first, 64)
			seen++
		case "Average Latency (s)":
			var sec float64
			sec, err = strconv.ParseFloat(first, 64)
			res.AvgLatency = time.Duration(sec * float64(time.Second))
		case "Response codes":
			// "NOERROR 9000 (90.00%), REFUSED 1000 (10.00%)"
			for part := range strings.SplitSeq(v, ",") {
				f := strings.Fields(part)
				if len(f) < 2 {
					continue
				}
				n, perr := strconv.Atoi(f[1])
				if perr != nil {
					return nil, fmt.Errorf("response codes %q: %w", v, perr)
				}
				res.Rcodes[f[0]] += n
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", k, v, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if seen < 3 {
		return nil, fmt.Errorf("no statistics (queries sent, completed, per second) in the output")
	}
	slices.Sort(res.Latencies)
	return res, nil
}

// latencyQuantile is the q-quantile of sorted latencies (nearest rank).
func latencyQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	idx := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(idx, 0), len(sorted)-1)]
}
