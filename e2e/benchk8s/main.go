// Command benchk8s is moat's Kubernetes control-plane benchmark (`make
// bench-k8s`, root: the agent loads its BPF programs). In one run, against
// a real etcd + kube-apiserver started by internal/k8stest:
//
//   - the cluster: N policies (moat.io NetworkPolicy) over L local pods
//     (scheduled to the agent's node) and C pods on other nodes, all created
//     as API objects with spec.nodeName and status.podIP (no kubelet);
//   - the agent: the built moat-agent binary in Kubernetes mode
//     (--kubeconfig, --node-name, --config-map) with the token of a
//     ServiceAccount bound to the chart's agent role, its own process,
//     talking to the apiserver through a counting reverse proxy so that
//     every request it makes is attributed to it;
//   - apply latency: A times, a client Create of one more policy selecting a
//     local pod, timed until the agent's Plan has the new entry (read from
//     the agent's API, GET /v1/status: per-endpoint entry counts of the
//     published Plan), p50/p99;
//   - the agent's RSS (VmRSS and VmHWM from /proc) after the applies;
//   - requests from an idle agent: every request the proxy sees during an
//     idle window, by verb (goal: watches only, no list, no get), and the
//     apiserver's own apiserver_request_total delta over the window for the
//     resources the agent reads (the apiserver's loopback controllers also
//     count there; they touch leases and endpoints, not these).
//
// It prints a table and writes JSON with -json.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// Config is one run's shape.
type Config struct {
	LocalPods   int           `json:"localPods"`
	ClusterPods int           `json:"clusterPods"`
	Nodes       int           `json:"nodes"`
	Namespaces  int           `json:"namespaces"`
	Policies    int           `json:"policies"`
	Applies     int           `json:"applies"`
	Idle        time.Duration `json:"-"` // reported as idle.seconds
	AgentBinary string        `json:"-"`
	JSONPath    string        `json:"-"`
	Verbose     bool          `json:"-"`
}

// Validate names what is wrong.
func (c Config) Validate() error {
	switch {
	case c.LocalPods < 1 || c.ClusterPods < 0 || c.Nodes < 1 || c.Namespaces < 1:
		return fmt.Errorf("-local-pods, -nodes and -namespaces must be at least 1, -cluster-pods at least 0")
	case c.Policies < 0 || c.Applies < 2:
		return fmt.Errorf("-policies must be at least 0 and -applies at least 2")
	case c.Idle < 10*time.Second:
		return fmt.Errorf("-idle %s: want at least 10s for a per-minute rate", c.Idle)
	case c.AgentBinary == "":
		return fmt.Errorf("-agent: the moat-agent binary is required (make bench-k8s builds it)")
	}
	return nil
}

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchk8s:", err)
		os.Exit(1)
	}
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	cfg := Config{LocalPods: 100, ClusterPods: 5000, Nodes: 50, Namespaces: 10, Policies: 1000, Applies: 50, Idle: 60 * time.Second}
	fs := flag.NewFlagSet("benchk8s", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.LocalPods, "local-pods", cfg.LocalPods, "pods on the agent's node")
	fs.IntVar(&cfg.ClusterPods, "cluster-pods", cfg.ClusterPods, "pods on other nodes")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "other nodes")
	fs.IntVar(&cfg.Namespaces, "namespaces", cfg.Namespaces, "namespaces the pods and policies spread over")
	fs.IntVar(&cfg.Policies, "policies", cfg.Policies, "policies before the applies")
	fs.IntVar(&cfg.Applies, "applies", cfg.Applies, "timed policy applies")
	fs.DurationVar(&cfg.Idle, "idle", cfg.Idle, "idle window for the request rate")
	fs.StringVar(&cfg.AgentBinary, "agent", "", "moat-agent binary")
	fs.StringVar(&cfg.JSONPath, "json", "", "also write the report as JSON to `file`")
	fs.BoolVar(&cfg.Verbose, "v", false, "progress on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if os.Getenv("MOAT_K8S_BINS") == "" {
		return fmt.Errorf("MOAT_K8S_BINS is not set: run scripts/k8s-bins.sh and export its output (make bench-k8s does)")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the agent loads BPF programs")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// internal/k8stest takes a testing.TB; testing.Benchmark provides one
	// (its cleanups stop etcd and the apiserver). The body runs once.
	var (
		rep    *Report
		runErr error
		ran    bool
	)
	testing.Benchmark(func(b *testing.B) {
		if ran {
			return
		}
		ran = true
		rep, runErr = run(ctx, b, cfg, stderr)
	})
	if !ran {
		return fmt.Errorf("the benchmark body did not run")
	}
	if rep != nil {
		rep.WriteTable(stdout)
		if cfg.JSONPath != "" {
			data, err := json.MarshalIndent(rep, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(cfg.JSONPath, append(data, '\n'), 0o644); err != nil {
				return err
			}
		}
	}
	return runErr
}
