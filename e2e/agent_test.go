package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/internal/testutil"
	"github.com/moatnet/moat/policy"
)

// pollInterval is the agent's source poll interval in the suite: short, so
// that 100 policy replacements take seconds, not minutes.
const pollInterval = "50ms"

// agentSpec describes one test's agent.
type agentSpec struct {
	// short names the test's resources: netns prefix "e2<short>-", pin root
	// /sys/fs/bpf/moat-e2e-<short>. Keep it to a few characters.
	short string
	// endpoints is the endpoints file (YAML).
	endpoints string
	// policies maps file names in the policy dir to their content.
	policies map[string]string
	// verdictEvents turns on verdict events for every new flow.
	verdictEvents bool
	// proxy is the agent's --proxy ("" runs its default, the embedded
	// proxy; "external" waits for one that never comes).
	proxy string
	// config is more agent config (YAML lines).
	config string
}

// testAgent is a moat-agent process under test, with its files and API.
type testAgent struct {
	t    *testing.T
	bins binaries
	spec agentSpec

	prefix, pinRoot string
	policyDir       string
	endpointsFile   string
	configFile      string
	stateDir        string
	runDir          string
	logPath         string
	metricsAddr     string

	cmd  *exec.Cmd
	done chan error // receives the process's exit once
	api  *http.Client
}

// startAgent prepares a test's agent, starts it and waits until every
// endpoint of the endpoints file is up. t.Cleanup stops the agent and runs
// `moat-agent cleanup` for its prefix and pin root, even when the test fails.
func startAgent(t *testing.T, spec agentSpec) *testAgent {
	t.Helper()
	bins := buildBinaries(t)
	dir := t.TempDir()
	a := &testAgent{
		t:             t,
		bins:          bins,
		spec:          spec,
		prefix:        "e2" + spec.short + "-",
		pinRoot:       "/sys/fs/bpf/moat-e2e-" + spec.short,
		policyDir:     filepath.Join(dir, "policies"),
		endpointsFile: filepath.Join(dir, "endpoints.yaml"),
		configFile:    filepath.Join(dir, "agent.yaml"),
		stateDir:      filepath.Join(dir, "state"),
		runDir:        filepath.Join(dir, "run"),
		logPath:       filepath.Join(dir, "agent.log"),
		metricsAddr:   freeLoopbackAddr(t),
	}
	a.api = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", filepath.Join(a.runDir, agent.APISocket))
			},
		},
	}
	// A crashed earlier run may have left this prefix's state behind.
	a.cleanupState()
	t.Cleanup(func() {
		a.stop()
		a.cleanupState()
		if t.Failed() {
			a.logTail(8 << 10)
		}
	})
	for _, d := range []string{a.policyDir, a.stateDir, a.runDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatalf("create %s: %v", d, err)
		}
	}
	writeFile(t, a.endpointsFile, spec.endpoints)
	for name, content := range spec.policies {
		writeFile(t, filepath.Join(a.policyDir, name), content)
	}
	// The proxies' transparent listeners (HTTP and DNS) get free ports, so that the suite
	// does not collide with another agent on the machine.
	cfg := fmt.Sprintf("policies: %s\nendpoints: %s\npollInterval: %s\nconntrackGCInterval: 1s\nverdictEvents: %v\negressHTTPPort: %d\ningressHTTPPort: %d\ndnsProxyPort: %d\n",
		a.policyDir, a.endpointsFile, pollInterval, spec.verdictEvents, freeAgentPort(t), freeAgentPort(t), freeAgentPort(t)) + spec.config
	writeFile(t, a.configFile, cfg)
	a.start()
	return a
}

// start runs the agent process and waits until it reports every endpoint.
func (a *testAgent) start() {
	t := a.t
	t.Helper()
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
	if err != nil {
		t.Fatalf("open agent log: %v", err)
	}
	args := []string{
		"--config", a.configFile,
		"--policies", a.policyDir,
		"--endpoints", a.endpointsFile,
		"--state-dir", a.stateDir,
		"--run-dir", a.runDir,
		"--bpf-root", a.pinRoot,
		"--netns-prefix", a.prefix,
		"--metrics-address", a.metricsAddr,
		"--node-name", "e2e-node",
	}
	if a.spec.verdictEvents {
		args = append(args, "--verdict-events")
	}
	if a.spec.proxy != "" {
		args = append(args, "--proxy", a.spec.proxy)
	}
	cmd := exec.Command(a.bins.agent, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start moat-agent: %v", err)
	}
	a.cmd = cmd
	a.done = make(chan error, 1)
	go func() {
		err := cmd.Wait()
		logf.Close()
		a.done <- err
	}()
	a.waitReady()
}

// waitReady waits until the agent's status lists every endpoint with an
// interface and at least one reconcile happened.
func (a *testAgent) waitReady() Status {
	a.t.Helper()
	eps, err := policy.ParseEndpoints(a.endpointsFile, []byte(a.spec.endpoints))
	if err != nil {
		a.t.Fatalf("parse endpoints: %v", err)
	}
	want := len(eps.Endpoints)
	return a.waitStatus("agent ready with all endpoints", 30*time.Second, func(st Status) bool {
		if st.Revision < 1 || len(st.Endpoints) != want {
			return false
		}
		for _, e := range st.Endpoints {
			if e.Ifindex == 0 {
				return false
			}
		}
		return true
	})
}

// Status is the agent's status as the local API returns it.
type Status = agent.Status

// status fetches GET /v1/status.
func (a *testAgent) status() (Status, error) {
	var st Status
	err := a.getJSON("/v1/status", &st)
	return st, err
}

func (a *testAgent) getJSON(path string, v any) error {
	resp, err := a.api.Get("http://agent" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// plan fetches GET /v1/plan.
func (a *testAgent) plan() (*policy.Plan, error) {
	var p policy.Plan
	if err := a.getJSON("/v1/plan", &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// waitStatus polls the status until cond holds, failing the test after
// timeout or when the agent exits.
func (a *testAgent) waitStatus(what string, timeout time.Duration, cond func(Status) bool) Status {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var (
		last    Status
		lastErr error
	)
	for {
		select {
		case err := <-a.done:
			a.done <- err // keep it for stop
			a.t.Fatalf("waiting for %s: moat-agent exited: %v", what, err)
		default:
		}
		st, err := a.status()
		if err == nil && cond(st) {
			return st
		}
		if err == nil {
			last = st
		}
		lastErr = err
		if time.Now().After(deadline) {
			lastJSON, _ := json.Marshal(last)
			a.t.Fatalf("waiting for %s: not within %v (last error: %v; last status: %s)", what, timeout, lastErr, lastJSON)
		}
		time.Sleep(10 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}

// setPolicy replaces one policy file atomically (write then rename, so the
// agent never reads half a file).
func (a *testAgent) setPolicy(name, content string) {
	a.t.Helper()
	path := filepath.Join(a.policyDir, name)
	writeFile(a.t, path+".tmp", content)
	if err := os.Rename(path+".tmp", path); err != nil {
		a.t.Fatalf("replace policy %s: %v", name, err)
	}
}

// applyPolicy replaces a policy file and waits until the agent applied it:
// the status revision moved past the one before the write (or the error
// reported before it went away) and no policy error is reported. The maps
// hold the new policy by then; an HTTP redirect in it may still wait for the
// proxy's ACK.
func (a *testAgent) applyPolicy(name, content string) Status {
	a.t.Helper()
	before, err := a.status()
	if err != nil {
		a.t.Fatalf("status: %v", err)
	}
	a.setPolicy(name, content)
	return a.waitStatus("policy "+name+" applied", 15*time.Second, func(st Status) bool {
		// A file put back to the version that stayed in force changes no
		// policy, so the revision need not move: the error going away is
		// the sign that the agent read it.
		moved := st.Revision > before.Revision || len(before.PolicyErrors) > 0
		return moved && len(st.PolicyErrors) == 0 && st.LastError == ""
	})
}

// statusEndpoint returns an endpoint's line of the status ("name" in the
// default namespace or "namespace/name").
func statusEndpoint(st Status, name string) (agent.EndpointStatus, bool) {
	for _, e := range st.Endpoints {
		if e.Namespace+"/"+e.Name == name || (e.Namespace == "default" && e.Name == name) {
			return e, true
		}
	}
	return agent.EndpointStatus{}, false
}

// netnsPath is the netns of an endpoint the agent created.
func (a *testAgent) netnsPath(namespace, name string) string {
	return "/var/run/netns/" + a.prefix + namespace + "-" + name
}

// kill sends sig to the agent and waits for it to exit.
func (a *testAgent) kill(sig syscall.Signal) {
	a.t.Helper()
	if a.cmd == nil {
		return
	}
	if err := a.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		a.t.Fatalf("signal moat-agent: %v", err)
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.t.Fatalf("moat-agent did not exit within 10s of %v", sig)
	}
	a.cmd = nil
}

// stop ends the agent if it runs: SIGTERM, then SIGKILL after 5s.
func (a *testAgent) stop() {
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		a.t.Logf("moat-agent did not stop within 5s of SIGTERM; killing it")
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

// cleanupState runs `moat-agent cleanup` for the test's prefix and pin root.
func (a *testAgent) cleanupState() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, a.bins.agent, "cleanup", "--bpf-root", a.pinRoot, "--netns-prefix", a.prefix).CombinedOutput()
	if err != nil {
		a.t.Errorf("moat-agent cleanup --netns-prefix %s --bpf-root %s: %v: %s", a.prefix, a.pinRoot, err, out)
	}
}

// logTail logs the last n bytes of the agent's log.
func (a *testAgent) logTail(n int64) {
	f, err := os.Open(a.logPath)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	a.t.Logf("moat-agent log (tail):\n%s", b)
}

// metrics scrapes the agent's /metrics.
func (a *testAgent) metrics() (metricSet, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.metricsAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// flowRecord is the part of a flow (Hubble JSON) the suite checks.
type flowRecord struct {
	Verdict    string `json:"verdict"`
	DropReason string `json:"drop_reason_desc"`
	EventType  string `json:"event_type"`
	IP         struct {
		Source      string `json:"source"`
		Destination string `json:"destination"`
	} `json:"IP"`
	L4 struct {
		Protocol        string `json:"protocol"`
		DestinationPort uint16 `json:"destination_port"`
	} `json:"l4"`
	Source           flowEndpoint `json:"source"`
	Destination      flowEndpoint `json:"destination"`
	TrafficDirection string       `json:"traffic_direction"`
}

type flowEndpoint struct {
	Identity  uint32 `json:"identity"`
	Namespace string `json:"namespace"`
	PodName   string `json:"pod_name"`
}

// flows fetches GET /v1/flows with the given query.
func (a *testAgent) flows(query string) ([]flowRecord, error) {
	resp, err := a.api.Get("http://agent/v1/flows?" + query)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /v1/flows?%s: %s: %s", query, resp.Status, bytes.TrimSpace(b))
	}
	var out []flowRecord
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var f flowRecord
		if err := json.Unmarshal(line, &f); err != nil {
			return nil, fmt.Errorf("decode flow %q: %w", line, err)
		}
		out = append(out, f)
	}
	return out, sc.Err()
}

// waitFlow polls the flows until one matches, failing after timeout.
func (a *testAgent) waitFlow(what, query string, timeout time.Duration, match func(flowRecord) bool) flowRecord {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var seen []flowRecord
	for {
		fs, err := a.flows(query)
		if err != nil {
			a.t.Fatalf("flows: %v", err)
		}
		for _, f := range fs {
			if match(f) {
				return f
			}
		}
		seen = fs
		if time.Now().After(deadline) {
			b, _ := json.Marshal(seen)
			a.t.Fatalf("no flow %s within %v; flows: %s", what, timeout, b)
		}
		time.Sleep(20 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port that was free a
// moment ago (the agent takes --metrics-address and does not report the
// port it bound).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// freeAgentPort returns a TCP port that was free on every address a moment
// ago.
func freeAgentPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// requirePrivileged gates a test and checks the tools the suite needs.
func requirePrivileged(t *testing.T) {
	t.Helper()
	testutil.Privileged(t)
	_, err := exec.LookPath("go")
	testutil.Require(t, "go toolchain (to build the binaries)", err)
	_, err = os.Stat("/sys/fs/bpf")
	testutil.Require(t, "bpffs at /sys/fs/bpf", err)
	_, err = exec.LookPath("ip")
	testutil.Require(t, "iproute2 (ip), for the world netns", err)
}
