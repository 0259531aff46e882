package main

// env.go owns the bench's world: the agent process with its files, ports
// and endpoints, the upstream server in the server endpoint's netns, the
// policy switch, and the teardown.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/internal/testutil"
)

type env struct {
	cfg Config
	log *slog.Logger

	dir, policyDir, runDir, logPath string
	metricsAddr                     string
	cmd                             *exec.Cmd
	done                            chan struct{}
	api                             *http.Client
	up                              *upstream
	srv                             *server
}

func (e *env) netnsName(name string) string { return e.cfg.NetnsPrefix + benchNamespace + "-" + name }
func (e *env) netnsPath(name string) string { return "/var/run/netns/" + e.netnsName(name) }
func (e *env) pid() int                     { return e.cmd.Process.Pid }

// setup starts the agent with no policy and the upstream server; on error
// it tears down what it built.
func setup(ctx context.Context, cfg Config, log *slog.Logger) (*env, error) {
	dir, err := os.MkdirTemp("", "moat-benchdns-")
	if err != nil {
		return nil, err
	}
	e := &env{cfg: cfg, log: log, dir: dir, policyDir: filepath.Join(dir, "policies"), runDir: filepath.Join(dir, "run"), logPath: filepath.Join(dir, "agent.log")}
	if err := e.build(ctx); err != nil {
		return nil, errors.Join(err, e.teardown())
	}
	return e, nil
}

func (e *env) build(ctx context.Context) error {
	// A crashed earlier run may have left the prefix's state behind.
	if err := e.cleanup(); err != nil {
		return err
	}
	for _, d := range []string{e.policyDir, e.runDir, filepath.Join(e.dir, "state")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	epFile := filepath.Join(e.dir, "endpoints.yaml")
	if err := os.WriteFile(epFile, []byte(endpointsYAML()), 0o640); err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	mport, err := freePorts(1)
	if err != nil {
		return err
	}
	e.metricsAddr = fmt.Sprintf("127.0.0.1:%d", mport[0])
	cfgFile := filepath.Join(e.dir, "agent.yaml")
	conf := fmt.Sprintf("policies: %s\nendpoints: %s\npollInterval: 50ms\negressHTTPPort: %d\ningressHTTPPort: %d\ndnsProxyPort: %d\n",
		e.policyDir, epFile, ports[0], ports[1], ports[2])
	if err := os.WriteFile(cfgFile, []byte(conf), 0o640); err != nil {
		return err
	}
	logf, err := os.Create(e.logPath)
	if err != nil {
		return err
	}
	e.cmd = exec.Command(e.cfg.AgentBinary,
		"--config", cfgFile, "--state-dir", filepath.Join(e.dir, "state"), "--run-dir", e.runDir,
		"--bpf-root", e.cfg.PinRoot, "--netns-prefix", e.cfg.NetnsPrefix,
		"--metrics-address", e.metricsAddr, "--node-name", "bench-dns", "--log-level", "warn")
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		logf.Close()
		e.cmd = nil
		return fmt.Errorf("start %s: %w", e.cfg.AgentBinary, err)
	}
	e.done = make(chan struct{})
	go func() { _ = e.cmd.Wait(); logf.Close(); close(e.done) }()
	sock := filepath.Join(e.runDir, agent.APISocket)
	e.api = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	st, err := e.waitStatus(ctx, "agent ready with both endpoints", 60*time.Second, func(st agent.Status) bool {
		if st.Revision < 1 || len(st.Endpoints) != 2 {
			return false
		}
		for _, ep := range st.Endpoints {
			if ep.Ifindex == 0 {
				return false
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	e.log.Info("agent ready", "pid", e.pid(), "revision", st.Revision, "dir", e.dir)
	e.up = &upstream{ips: e.cfg.IPs, ttl: uint32(e.cfg.TTL / time.Second), rotate: e.cfg.Rotate, now: time.Now}
	srv, err := serveUpstream(func(fn func() error) error { return testutil.InNetns(e.netnsPath("dns"), fn) }, serverAddr, dns.HandlerFunc(e.up.ServeDNS), 2)
	if err != nil {
		return fmt.Errorf("serve dns in %s: %w", e.netnsName("dns"), err)
	}
	e.srv = srv
	return nil
}

// freePorts returns n ports free for both TCP and UDP on every address.
func freePorts(n int) ([]uint16, error) {
	var out []uint16
	for len(out) < n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		out = append(out, uint16(port))
	}
	return out, nil
}

func (e *env) exited() bool {
	select {
	case <-e.done:
		return true
	default:
		return false
	}
}

func (e *env) status(ctx context.Context) (agent.Status, error) {
	var st agent.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := e.api.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// waitStatus polls the agent's status until cond holds.
func (e *env) waitStatus(ctx context.Context, what string, timeout time.Duration, cond func(agent.Status) bool) (agent.Status, error) {
	deadline := time.Now().Add(timeout)
	var last agent.Status
	var lastErr error
	for {
		if e.exited() {
			return last, fmt.Errorf("waiting for %s: moat-agent exited: %s", what, e.logTail())
		}
		st, err := e.status(ctx)
		if err == nil && cond(st) {
			return st, nil
		}
		if err == nil {
			last = st
		}
		lastErr = err
		if time.Now().After(deadline) {
			return last, fmt.Errorf("waiting for %s: not within %s (last error %v, last revision %d, policy errors %v)", what, timeout, lastErr, last.Revision, last.PolicyErrors)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// setPolicy installs the bench policy (on) or removes it (off), waits for
// the agent to apply it, then asks the server about probeName from the
// client until the answer comes from the expected side: REFUSED from the
// proxy (on), NXDOMAIN from the server (off).
func (e *env) setPolicy(ctx context.Context, on bool) error {
	before, err := e.status(ctx)
	if err != nil {
		return err
	}
	path := filepath.Join(e.policyDir, "bench.yaml")
	want := 0
	if on {
		want = 1
		if err := os.WriteFile(path+".tmp", []byte(policyYAML(e.cfg)), 0o640); err != nil {
			return err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return err
		}
	} else if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if _, err := e.waitStatus(ctx, fmt.Sprintf("policy on=%v applied", on), 60*time.Second, func(st agent.Status) bool {
		return st.Revision > before.Revision && st.Policies == want && len(st.PolicyErrors) == 0 && st.LastError == ""
	}); err != nil {
		return err
	}
	wantRcode := dns.RcodeNameError
	if on {
		wantRcode = dns.RcodeRefused
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rc, err := e.query(probeName, dns.TypeA)
		if err == nil && rc == wantRcode {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("policy on=%v: %s answered %s (%v); want %s", on, probeName, dns.RcodeToString[rc], err, dns.RcodeToString[wantRcode])
		}
		time.Sleep(50 * time.Millisecond) // poll interval of a deadline-bounded wait
	}
}

// query asks the server about name from the client netns.
func (e *env) query(name string, qtype uint16) (int, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	var resp *dns.Msg
	err := testutil.InNetns(e.netnsPath("client"), func() error {
		var err error
		resp, _, err = c.Exchange(m, netip.AddrPortFrom(serverAddr, 53).String())
		return err
	})
	if err != nil {
		return -1, err
	}
	return resp.Rcode, nil
}

func (e *env) logTail() string {
	data, _ := os.ReadFile(e.logPath)
	if len(data) > 3000 {
		data = data[len(data)-3000:]
	}
	return string(data)
}

// cleanup runs `moat-agent cleanup` for the bench's prefix and pin root.
func (e *env) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.cfg.AgentBinary, "cleanup", "--bpf-root", e.cfg.PinRoot, "--netns-prefix", e.cfg.NetnsPrefix).CombinedOutput()
	if err != nil {
		return fmt.Errorf("moat-agent cleanup --netns-prefix %s --bpf-root %s: %w: %s", e.cfg.NetnsPrefix, e.cfg.PinRoot, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// teardown stops the server and the agent and removes the agent's state;
// it runs to the end whatever fails.
func (e *env) teardown() error {
	var errs []error
	if e.srv != nil {
		errs = append(errs, e.srv.Close())
	}
	if e.cmd != nil && !e.exited() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(20 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.done
		}
	}
	errs = append(errs, e.cleanup())
	if !e.cfg.Keep {
		errs = append(errs, os.RemoveAll(e.dir))
	} else {
		e.log.Warn("kept the run directory", "dir", e.dir)
	}
	return errors.Join(errs...)
}
