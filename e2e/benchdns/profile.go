package main

// profile.go owns the agent's CPU profile: perf record on the agent process
// during one extra (unmeasured) max-throughput run per proxy scenario. The
// agent serves no pprof endpoint, and perf sees its Go symbols.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// topSymbols is how many lines of perf report the bench keeps.
const topSymbols = 15

func (e *env) profile(ctx context.Context, scs []scenario, policyOn *bool) (map[string][]string, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return nil, errors.New("perf not found (apt-get install linux-perf); the agent exposes no pprof endpoint, so no profile")
	}
	out := map[string][]string{}
	for _, sc := range scs {
		if sc.Policy != *policyOn {
			if err := e.setPolicy(ctx, sc.Policy); err != nil {
				return out, err
			}
			*policyOn = sc.Policy
		}
		data := filepath.Join(e.dir, "perf-"+strings.ReplaceAll(sc.Name, "+", "-")+".data")
		secs := strconv.Itoa(int(e.cfg.Duration / time.Second))
		rec := exec.CommandContext(ctx, "perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(e.pid()), "-o", data, "--", "sleep", secs)
		var recOut bytes.Buffer
		rec.Stdout, rec.Stderr = &recOut, &recOut
		if err := rec.Start(); err != nil {
			return out, fmt.Errorf("start perf record: %w", err)
		}
		args := dnsperfArgs(e.netnsName("client"), serverAddr.String(), sc.File, e.cfg.Duration, 0, e.cfg.Clients, e.cfg.Outstanding)
		_, perr := runDNSPerf(ctx, args)
		if err := rec.Wait(); err != nil {
			return out, fmt.Errorf("perf record: %w: %s", err, tail(recOut.String(), 400))
		}
		if perr != nil {
			return out, perr
		}
		rep, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol", "-g", "none", "--percent-limit", "0.5").Output()
		if err != nil {
			return out, fmt.Errorf("perf report: %w", err)
		}
		out[sc.Name] = perfTop(string(rep), topSymbols)
	}
	return out, nil
}

// perfTop keeps the first n sample lines of perf report --stdio
// ("  12.34%  [.] runtime.mallocgc").
func perfTop(report string, n int) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() && len(out) < n {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || !strings.Contains(l, "%") {
			continue
		}
		f := strings.Fields(l)
		for len(f) > 0 && f[len(f)-1] == "-" { // empty columns of perf's layout
			f = f[:len(f)-1]
		}
		out = append(out, strings.Join(f, " "))
	}
	return out
}
