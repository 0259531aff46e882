package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	alsv3 "github.com/envoyproxy/go-control-plane/envoy/service/accesslog/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// agentGoroutines lists the goroutines that run code of the agent's
// components (moat's packages or gRPC), but the caller's.
func agentGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 {
			continue // this goroutine
		}
		if strings.Contains(g, "github.com/moatnet/moat/") || strings.Contains(g, "google.golang.org/grpc") {
			if strings.Contains(g, "testing.tRunner") && strings.Contains(g, "_test.go") {
				continue // another test's goroutine
			}
			out = append(out, g)
		}
	}
	return out
}

// waitNoGoroutines waits until no agent goroutine is left.
func waitNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := agentGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d agent goroutines still run after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeNode is openNode for tests: the fakes of reconcile_test.go, and a
// record of whether close ran.
func fakeNode(closed *bool) func(context.Context) (*nodeParts, error) {
	return func(context.Context) (*nodeParts, error) {
		r := newRecorder()
		return &nodeParts{
			maps:  fakeMaps{r},
			plumb: fakePlumbing{r},
			run: []func(context.Context) error{func(ctx context.Context) error {
				<-ctx.Done() // an event reader
				return nil
			}},
			close: func() { *closed = true },
		}, nil
	}
}

func lifecycleAgent(t *testing.T, mod func(*Config)) *Agent {
	t.Helper()
	h := newOrderHarness(t, time.Hour)
	cfg := h.a.cfg
	cfg.Proxy = ProxyExternal
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, h.a.log)
	if err != nil {
		t.Fatal(err)
	}
	a.lockDir = filepath.Join(t.TempDir(), "lock")
	a.cfg.BPFRoot = "/sys/fs/bpf/moat-unit-" + t.Name()
	return a
}

// TestFailedStartLeavesNothingRunning: a start that fails, before or after
// the agent's goroutines started, returns only when none of them runs, and
// closes the node's parts after them.
func TestFailedStartLeavesNothingRunning(t *testing.T) {
	if left := agentGoroutines(); len(left) > 0 {
		t.Fatalf("test premise: agent goroutines before the test:\n%s", strings.Join(left, "\n\n"))
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"proxy cannot start", func(c *Config) {
			c.Proxy, c.EnvoyBinary = ProxyEnvoy, "/nonexistent/envoy"
		}, "find envoy binary"},
		{"metrics address in use", func(c *Config) { c.MetricsAddress = busy.Addr().String() }, "address already in use"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := lifecycleAgent(t, tc.mod)
			closed := false
			a.openNode = fakeNode(&closed)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := a.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want an error containing %q", err, tc.want)
			}
			waitNoGoroutines(t)
			if tc.name != "proxy cannot start" && !closed {
				t.Errorf("the node's parts were not closed")
			}
		})
	}
}

// TestRunStopsWithOpenAccessLogStream: a proxy keeps its access-log stream
// open; the agent still stops, within its stop grace.
func TestRunStopsWithOpenAccessLogStream(t *testing.T) {
	a := lifecycleAgent(t, nil)
	a.alsGrace = 100 * time.Millisecond
	closed := false
	a.openNode = fakeNode(&closed)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	sock := filepath.Join(a.cfg.RunDir, AccessLogSocket)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var stream alsv3.AccessLogService_StreamAccessLogsClient
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The first message reaches the server only once it listens.
		stream, err = alsv3.NewAccessLogServiceClient(conn).StreamAccessLogs(t.Context(), grpc.WaitForReady(true))
		if err == nil {
			err = stream.Send(&alsv3.StreamAccessLogsMessage{
				Identifier: &alsv3.StreamAccessLogsMessage_Identifier{Node: &corev3.Node{Id: "node-1"}, LogName: "test"},
				LogEntries: &alsv3.StreamAccessLogsMessage_HttpLogs{HttpLogs: &alsv3.StreamAccessLogsMessage_HTTPAccessLogEntries{
					LogEntry: []*accesslogv3.HTTPAccessLogEntry{{}},
				}},
			})
		}
		if err == nil && a.ring.Written() > 0 {
			break // the server holds the open stream
		}
		if time.Now().After(deadline) {
			t.Fatalf("access-log stream not served: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return while an access-log stream stayed open")
	}
	if !closed {
		t.Error("the node's parts were not closed")
	}
	if _, err := stream.CloseAndRecv(); err == nil || errors.Is(err, context.Canceled) {
		t.Logf("stream end: %v", err)
	}
}
