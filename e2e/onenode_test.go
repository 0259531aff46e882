package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moatnet/moat/agent"
)

const oneNodeEndpoints = `endpoints:
- name: server
  labels: {app: server}
  ipv4: 10.217.0.10
- name: client
  labels: {app: client}
  ipv4: 10.217.0.20
`

// oneNodePolicy sends client->server:80 through the HTTP proxy (so the
// proxy routing matters) and allows client->server:8080 at L3/L4.
const oneNodePolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: server}
spec:
  endpointSelector: {matchLabels: {app: server}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts:
    - ports: [{port: "80", protocol: TCP}]
      rules: {http: [{method: GET, path: "/ping"}]}
  - fromEndpoints: [{matchLabels: {app: client}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`

// runAgentProcess runs moat-agent with args until it exits (or the test's
// bound), returning its output and exit error.
func runAgentProcess(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("moat-agent %s did not exit: %s", strings.Join(args, " "), out)
	}
	return string(out), err
}

// TestPrivilegedOneAgentPerPinRoot: while an agent serves traffic, a second
// agent on its pin root, two agents started at once on another root, and
// cleanups (of its root, refused; of another agent's root and endpoints,
// which must keep the shared proxy routing) leave its traffic untouched:
// 0 failed requests, through the proxy and at L3/L4.
func TestPrivilegedOneAgentPerPinRoot(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "1", endpoints: oneNodeEndpoints, policies: map[string]string{"p.yaml": oneNodePolicy}})
	server := endpointPeer(a, "server", "10.217.0.10")
	client := endpointPeer(a, "client", "10.217.0.20")
	serveHTTP(t, server, 80)
	serveHTTP(t, server, 8080)
	a.waitStatus("proxy ready", 30*time.Second, func(st Status) bool { return st.ProxyReady })

	// Traffic for the whole test: a new connection per request, so that
	// every request goes through the maps, the redirect and the proxy
	// routing as they are at that moment.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, port := range []int{80, 8080} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := podHTTPClient(client)
			c.Transport.(*http.Transport).DisableKeepAlives = true
			var conns atomic.Int64
			url := fmt.Sprintf("http://10.217.0.10:%d/ping", port)
			for ctx.Err() == nil {
				if err := getOnce(c, url, &conns); err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("port %d: %w", port, err))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	waitUntil(t, "first requests", 15*time.Second, func() bool { return ok.Load() >= 10 })
	pid := a.cmd.Process.Pid

	t.Run("start twice", func(t *testing.T) {
		dir := t.TempDir()
		out, err := runAgentProcess(t, a.bins.agent, "--config", a.configFile,
			"--policies", a.policyDir, "--endpoints", a.endpointsFile,
			"--state-dir", filepath.Join(dir, "state"), "--run-dir", filepath.Join(dir, "run"),
			"--bpf-root", a.pinRoot, "--netns-prefix", a.prefix, "--no-metrics", "--node-name", "e2e-node-2")
		if err == nil {
			t.Fatalf("a second agent on %s started: %s", a.pinRoot, out)
		}
		for _, want := range []string{a.pinRoot, "held by another process", "pid " + strconv.Itoa(pid)} {
			if !strings.Contains(out, want) {
				t.Errorf("second agent's error lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("cleanup of the running agent's root", func(t *testing.T) {
		out, err := runAgentProcess(t, a.bins.agent, "cleanup", "--bpf-root", a.pinRoot, "--netns-prefix", a.prefix)
		if err == nil || !strings.Contains(out, "cleanup refused") || !strings.Contains(out, "pid "+strconv.Itoa(pid)) {
			t.Fatalf("cleanup beside the running agent = %v:\n%s\nwant a refusal naming pid %d", err, out, pid)
		}
		if _, err := os.Stat(filepath.Join(a.pinRoot, "moat_policy")); err != nil {
			t.Errorf("pins of the running agent: %v", err)
		}
	})

	t.Run("start twice at once", func(t *testing.T) {
		startTwiceAtOnce(t, a)
	})

	t.Run("cleanup of another root", func(t *testing.T) {
		// Like `make demo` exiting: another agent's cleanup, with its own
		// netns prefix, must not take the proxy routing the running agent
		// uses.
		root := a.pinRoot + "-other"
		out, err := runAgentProcess(t, a.bins.agent, "cleanup", "--bpf-root", root, "--netns-prefix", "e2o-")
		if err != nil {
			t.Fatalf("cleanup of another root: %v:\n%s", err, out)
		}
		if !strings.Contains(out, "kept the proxy routing rule") {
			t.Errorf("cleanup output lacks the kept rule:\n%s", out)
		}
	})

	// Traffic went on: a few more requests after the last step, then stop.
	after := ok.Load()
	waitUntil(t, "requests after the last step", 15*time.Second, func() bool { return ok.Load() >= after+20 })
	stop()
	wg.Wait()
	t.Logf("requests: %d ok, %d failed", ok.Load(), failed.Load())
	if n := failed.Load(); n != 0 {
		t.Errorf("%d requests of the first agent failed (first: %v)", n, firstErr.Load())
	}
	st, err := a.status()
	if err != nil || !st.ProxyReady || st.LastError != "" {
		t.Errorf("first agent's status after the test: %+v, %v", st, err)
	}
}

// startTwiceAtOnce starts two agents on one fresh pin root at the same
// moment: one runs, the other exits with the lock error naming it.
func startTwiceAtOnce(t *testing.T, first *testAgent) {
	dir := t.TempDir()
	root := "/sys/fs/bpf/moat-e2e-2"
	prefix := "e22-"
	cleanup := func() {
		out, err := exec.Command(first.bins.agent, "cleanup", "--bpf-root", root, "--netns-prefix", prefix).CombinedOutput()
		if err != nil {
			t.Errorf("cleanup %s: %v: %s", root, err, out)
		}
	}
	cleanup()
	t.Cleanup(cleanup)
	pol := filepath.Join(dir, "policies")
	if err := os.MkdirAll(pol, 0o750); err != nil {
		t.Fatal(err)
	}
	eps := filepath.Join(dir, "endpoints.yaml")
	writeFile(t, eps, "endpoints:\n- name: solo\n  labels: {app: solo}\n  ipv4: 10.217.1.10\n")
	type proc struct {
		cmd    *exec.Cmd
		out    strings.Builder
		runDir string
		done   chan error
	}
	procs := make([]*proc, 2)
	for i := range procs {
		p := &proc{runDir: filepath.Join(dir, fmt.Sprintf("run%d", i)), done: make(chan error, 1)}
		p.cmd = exec.Command(first.bins.agent, "--policies", pol, "--endpoints", eps,
			"--state-dir", filepath.Join(dir, fmt.Sprintf("state%d", i)), "--run-dir", p.runDir,
			"--bpf-root", root, "--netns-prefix", prefix, "--no-metrics", "--poll-interval", "50ms",
			"--egress-http-port", strconv.Itoa(freeAgentPort(t)), "--ingress-http-port", strconv.Itoa(freeAgentPort(t)),
			"--dns-proxy-port", strconv.Itoa(freeAgentPort(t)),
			"--node-name", fmt.Sprintf("e2e-at-once-%d", i))
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
		procs[i] = p
	}
	for _, p := range procs {
		if err := p.cmd.Start(); err != nil {
			t.Fatalf("start moat-agent: %v", err)
		}
		go func() { p.done <- p.cmd.Wait() }()
	}
	defer func() {
		for _, p := range procs {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	}()
	// One exits with the lock error.
	var loser, winner *proc
	select {
	case err := <-procs[0].done:
		procs[0].done <- err
		loser, winner = procs[0], procs[1]
	case err := <-procs[1].done:
		procs[1].done <- err
		loser, winner = procs[1], procs[0]
	case <-time.After(30 * time.Second):
		t.Fatalf("neither of two agents on one pin root exited:\n%s\n%s", procs[0].out.String(), procs[1].out.String())
	}
	lerr := <-loser.done
	loser.done <- lerr
	want := "pid " + strconv.Itoa(winner.cmd.Process.Pid)
	if lerr == nil || !strings.Contains(loser.out.String(), "held by another process") || !strings.Contains(loser.out.String(), want) {
		t.Errorf("the second agent exited with %v, output:\n%s\nwant the lock error naming %s", lerr, loser.out.String(), want)
	}
	// The other one runs and reconciles.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", filepath.Join(winner.runDir, agent.APISocket))
		},
	}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-winner.done:
			winner.done <- err
			t.Fatalf("the first of two agents exited: %v:\n%s", err, winner.out.String())
		default:
		}
		var st Status
		resp, err := c.Get("http://agent/v1/status")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && st.Revision >= 1 && len(st.Endpoints) == 1 && st.Endpoints[0].Ifindex != 0 && st.LastError == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent that won the lock is not ready: %v %+v:\n%s", err, st, winner.out.String())
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}
