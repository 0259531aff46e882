package e2e

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/xds"
)

// pushServerEnv names the environment variable that turns a re-executed
// test binary into the push benchmark's xDS server process. Its value is a
// JSON pushServerConfig.
const pushServerEnv = "MOAT_XDSPUSH_SERVER_PROCESS"

// pushServerConfig tells the server process what to build and where to
// serve it.
type pushServerConfig struct {
	Socket           string `json:"socket"`
	Endpoints        int    `json:"endpoints"`
	RulesPerEndpoint int    `json:"rulesPerEndpoint"`
	Nodes            int    `json:"nodes"`
}

// pushCommand is one request of the benchmark to the server process, a
// JSON line on the child's stdin.
type pushCommand struct {
	// Op is one of:
	//   - "settle": wait until every node subscribed and ACKed the current
	//     version;
	//   - "prepare": apply the rule edit of Version and translate every
	//     node's plan (kept until "push");
	//   - "push": set the prepared resources of every node as Version and
	//     wait for every node's ACK;
	//   - "gc": collect garbage, return freed memory to the kernel and
	//     report the live heap.
	Op      string `json:"op"`
	Version int    `json:"version,omitempty"`
}

// pushReply is the server process's answer to one pushCommand (or, first
// of all, its ready message), a JSON line on file descriptor 3.
type pushReply struct {
	Err         string     `json:"err,omitempty"`
	Nodes       []string   `json:"nodes,omitempty"`       // ready: the node names, in order
	Routes      [][]string `json:"routes,omitempty"`      // ready: per node, the route names of version 0
	TranslateNS int64      `json:"translateNS,omitempty"` // prepare: translating every node's plan
	LatencyNS   []int64    `json:"latencyNS,omitempty"`   // push, settle: per node, push start to ACK
	HeapMiB     float64    `json:"heapMiB,omitempty"`     // gc: live Go heap
}

// runPushServerProcess is the entry point of the xDS server process of
// BenchmarkPushTranslated, which re-executes the test binary with
// pushServerEnv set, so that the server's memory can be measured apart from
// the 500 clients. TestMain dispatches here before any test runs (a helper
// process is not a test, so it never shows up as a skipped one).
//
// The process builds the benchmark's plan itself (envoy.BenchPlan, split
// over the nodes), serves version 0 on the socket, writes a ready reply,
// then answers pushCommands from stdin until stdin closes.
func runPushServerProcess(raw string) int {
	replies := json.NewEncoder(os.NewFile(3, "replies"))
	if err := servePushes(raw, os.Stdin, replies); err != nil {
		_ = replies.Encode(pushReply{Err: err.Error()})
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// servePushes is the server process: see runPushServerProcess.
func servePushes(raw string, commands io.Reader, replies *json.Encoder) error {
	var cfg pushServerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("parse %s: %w", pushServerEnv, err)
	}
	cluster := envoy.BenchPlan(cfg.Endpoints, cfg.RulesPerEndpoint)
	nodes := splitPlan(cluster, cfg.Nodes)
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.name
	}
	translate := func(version int) ([]map[resource.Type][]types.Resource, error) {
		editFirstRule(cluster, version)
		out := make([]map[resource.Type][]types.Resource, len(nodes))
		for i, n := range nodes {
			res, err := envoy.Translate(n.plan, envoy.Config{NodeName: n.name})
			if err != nil {
				return nil, fmt.Errorf("translate plan of %s: %w", n.name, err)
			}
			out[i] = res.ByType()
		}
		return out, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := startXDSServer(ctx, cfg.Socket)
	if err != nil {
		return err
	}
	version := 0
	set := func(res []map[resource.Type][]types.Resource) error {
		v := strconv.Itoa(version)
		for i, n := range nodes {
			if err := s.SetResources(ctx, n.name, v, res[i]); err != nil {
				return fmt.Errorf("set resources of %s: %w", n.name, err)
			}
			res[i] = nil
		}
		return nil
	}

	first, err := translate(version)
	if err != nil {
		return err
	}
	ready := pushReply{Nodes: names, Routes: make([][]string, len(nodes))}
	for i := range nodes {
		ready.Routes[i] = typedResourceNames(first[i][resource.RouteType])
	}
	if err := set(first); err != nil {
		return err
	}
	first = nil
	if err := replies.Encode(ready); err != nil {
		return fmt.Errorf("write ready reply: %w", err)
	}

	var prepared []map[resource.Type][]types.Resource
	dec := json.NewDecoder(bufio.NewReader(commands))
	for {
		var cmd pushCommand
		if err := dec.Decode(&cmd); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the benchmark is done
			}
			return fmt.Errorf("read command: %w", err)
		}
		var reply pushReply
		switch cmd.Op {
		case "settle":
			if err := waitSubscribed(ctx, s, len(nodes)); err != nil {
				return err
			}
			lat, err := waitNodesACK(ctx, s, names, strconv.Itoa(version), time.Now())
			if err != nil {
				return err
			}
			reply.LatencyNS = nanos(lat)
		case "prepare":
			start := time.Now()
			if prepared, err = translate(cmd.Version); err != nil {
				return err
			}
			reply.TranslateNS = int64(time.Since(start))
		case "push":
			if prepared == nil {
				return fmt.Errorf("push version %d: nothing prepared", cmd.Version)
			}
			version = cmd.Version
			start := time.Now()
			if err := set(prepared); err != nil {
				return err
			}
			prepared = nil
			lat, err := waitNodesACK(ctx, s, names, strconv.Itoa(version), start)
			if err != nil {
				return err
			}
			reply.LatencyNS = nanos(lat)
		case "gc":
			runtime.GC()
			debug.FreeOSMemory()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			reply.HeapMiB = float64(m.HeapAlloc) / (1 << 20)
		default:
			return fmt.Errorf("unknown command %q", cmd.Op)
		}
		if err := replies.Encode(reply); err != nil {
			return fmt.Errorf("write %s reply: %w", cmd.Op, err)
		}
	}
}

// waitSubscribed waits until n nodes have subscribed to s.
func waitSubscribed(ctx context.Context, s *xds.Server, n int) error {
	deadline := time.Now().Add(xdsWaitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for subscribedNodes(s.Status()) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients subscribed in %s", subscribedNodes(s.Status()), n, xdsWaitTimeout)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitNodesACK waits, bounded by xdsWaitTimeout, until every node ACKed
// version and returns per node the time from start to its ACK.
func waitNodesACK(ctx context.Context, s *xds.Server, nodes []string, version string, start time.Time) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, xdsWaitTimeout)
	defer cancel()
	latencies := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			errs[i] = s.WaitForACK(ctx, n, version)
			latencies[i] = time.Since(start)
		})
	}
	wg.Wait()
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmp.Or(first, err)
		}
	}
	if failed > 0 {
		return nil, fmt.Errorf("%d of %d nodes did not ACK version %s: %w", failed, len(nodes), version, first)
	}
	return latencies, nil
}

func nanos(ds []time.Duration) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = int64(d)
	}
	return out
}

// pushServerProc is the benchmark's handle on the server process.
type pushServerProc struct {
	cmd      *exec.Cmd
	commands *json.Encoder
	replies  *json.Decoder
	output   *lockedBuffer // the child's stdout and stderr
	ready    pushReply

	stopOnce sync.Once
	stdin    io.Closer
}

// startPushServer starts the server process for cfg, waits for its ready
// reply and stops (then kills) it when tb ends.
func startPushServer(tb testing.TB, cfg pushServerConfig) *pushServerProc {
	tb.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	replyR, replyW, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	defer replyW.Close() // the child holds its own copy
	tb.Cleanup(func() { _ = replyR.Close() })
	// Bounded: the child ends when its stdin closes, at the latest when its
	// own test timeout fires.
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1", "-test.timeout=30m")
	cmd.Env = append(os.Environ(), pushServerEnv+"="+string(raw))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{replyW} // file descriptor 3
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start xds server process: %v", err)
	}
	p := &pushServerProc{
		cmd:      cmd,
		commands: json.NewEncoder(stdin),
		replies:  json.NewDecoder(bufio.NewReader(replyR)),
		output:   out,
		stdin:    stdin,
	}
	tb.Cleanup(p.stop)
	ready, err := p.reply()
	if err != nil {
		tb.Fatalf("xds server process not ready: %v", err)
	}
	if len(ready.Nodes) != cfg.Nodes || len(ready.Routes) != cfg.Nodes {
		tb.Fatalf("xds server process ready with %d nodes and %d route lists, want %d", len(ready.Nodes), len(ready.Routes), cfg.Nodes)
	}
	p.ready = ready
	return p
}

// do sends cmd and returns the child's reply.
func (p *pushServerProc) do(cmd pushCommand) (pushReply, error) {
	if err := p.commands.Encode(cmd); err != nil {
		return pushReply{}, fmt.Errorf("send %s: %w%s", cmd.Op, err, p.failure())
	}
	r, err := p.reply()
	if err != nil {
		return pushReply{}, fmt.Errorf("%s: %w", cmd.Op, err)
	}
	return r, nil
}

func (p *pushServerProc) reply() (pushReply, error) {
	var r pushReply
	if err := p.replies.Decode(&r); err != nil {
		return pushReply{}, fmt.Errorf("read reply: %w%s", err, p.failure())
	}
	if r.Err != "" {
		return pushReply{}, fmt.Errorf("server process: %s%s", r.Err, p.failure())
	}
	return r, nil
}

// failure stops the child and describes how it ended, for an error.
func (p *pushServerProc) failure() string {
	p.stop()
	return fmt.Sprintf(" (server process %s; output:\n%s)", p.cmd.ProcessState, p.output.String())
}

// stop closes the child's stdin, which ends it, and kills it when it has
// not exited after a grace period.
func (p *pushServerProc) stop() {
	p.stopOnce.Do(func() {
		_ = p.stdin.Close()
		done := make(chan struct{})
		go func() {
			_ = p.cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
}

// statusMiB reads fields (e.g. "VmRSS", "VmHWM") of the child's
// /proc/<pid>/status, in MiB.
func (p *pushServerProc) statusMiB(tb testing.TB, fields ...string) []float64 {
	tb.Helper()
	return procStatusMiB(tb, fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid), fields...)
}

// procStatusMiB reads kB fields of a /proc/<pid>/status file, in MiB.
func procStatusMiB(tb testing.TB, path string, fields ...string) []float64 {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("read %s: %v", path, err)
	}
	out := make([]float64, len(fields))
	for i, field := range fields {
		found := false
		for line := range strings.Lines(string(data)) {
			rest, ok := strings.CutPrefix(line, field+":")
			if !ok {
				continue
			}
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				tb.Fatalf("parse %s %q in %s: %v", field, rest, path, err)
			}
			out[i], found = kb/1024, true
			break
		}
		if !found {
			tb.Fatalf("no %s in %s", field, path)
		}
	}
	return out
}

// lockedBuffer collects a child's output; safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startXDSServer runs an xDS server on socket until ctx ends and returns it
// once it is ready (the helper process has no testing.T).
func startXDSServer(ctx context.Context, socket string) (*xds.Server, error) {
	s, err := xds.New(xds.Config{Socket: socket}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		return nil, fmt.Errorf("create xds server: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	select {
	case <-s.Ready():
		return s, nil
	case err := <-errc:
		return nil, fmt.Errorf("run xds server: %w", err)
	case <-time.After(xdsWaitTimeout):
		return nil, errors.New("xds server not ready")
	}
}
