// Command moat-agent is moat's node agent. In standalone mode (the default)
// it reads policies from a watched directory and endpoints from a file,
// creates the endpoints' network namespaces, enforces L3/L4 policy in BPF and
// drives the L7 proxy over xDS.
//
//	moat-agent --config /etc/moat/agent.yaml
//	moat-agent --policies DIR --endpoints FILE [flags]
//	moat-agent --kubeconfig FILE --node-name NODE [--config-map kube-system/moat-config]
//	moat-agent --in-cluster --node-name NODE   (Kubernetes mode in a pod)
//	moat-agent cleanup          detach programs and remove pinned state
//
// In Kubernetes mode (--kubeconfig or --in-cluster) policies (moat.io,
// cilium.io/v2 when its CRDs exist, networking.k8s.io/v1), pods,
// namespaces, nodes and the apiserver's addresses come from the API through
// informers (package k8s), identities are cluster-wide Identity objects
// (k8s/identity), and the ConfigMap named by --config-map holds config
// fields (one key per field) over the config file, under the flags. Until
// the CNI hands pods to the agent, a local pod is enforced on only when its
// moat.io/interface annotation names its host-side veth (adopted like the
// standalone interface field); otherwise it is compiled into the Plan and
// the ipcache only.
//
// Every field of the config file has a flag (the field's name in kebab
// case); a flag given on the command line overrides the file, and a
// boolean flag can switch a default-on feature off (--local-delivery=false).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moatnet/moat/agent"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "moat-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "cleanup" {
		return cleanup(args[1:])
	}
	cfg, level, err := parseArgs(args, readConfigMap)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Kubernetes() {
		log.Info("moat-agent starting in Kubernetes mode", "node", cfg.NodeName, "kubeconfig", cfg.Kubeconfig, "inCluster", cfg.InCluster, "configMap", cfg.ConfigMap)
	} else {
		log.Info("moat-agent starting", "policies", cfg.Policies, "endpoints", cfg.Endpoints)
	}
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("moat-agent stopped; BPF enforcement stays in place (moat-agent cleanup removes it)")
	return nil
}

// readConfigMap applies the agent's ConfigMap (Kubernetes mode with
// --config-map) over cfg, read once from the API.
func readConfigMap(cfg agent.Config, k agent.Config) (agent.Config, error) {
	rc, err := k.RESTConfig()
	if err != nil {
		return cfg, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, found, err := agent.ReadConfigMap(ctx, rc, k.ConfigMap)
	if err != nil || !found {
		return cfg, err
	}
	return agent.ApplyConfigMap(cfg, k.ConfigMap, data)
}

// parseArgs reads the command line: the config file named by --config
// first, then (Kubernetes mode with --config-map) the ConfigMap through
// overlay, then every flag given, over them.
func parseArgs(args []string, overlay func(cfg, kube agent.Config) (agent.Config, error)) (agent.Config, slog.Level, error) {
	var level slog.Level
	// Pass 1: find --config (every other flag is parsed and dropped).
	var scratch agent.Config
	pre, configPath, _, _, _ := newFlagSet(&scratch)
	pre.SetOutput(discard{})
	if err := pre.Parse(args); err != nil {
		// Pass 2 reports it, with usage.
		configPath = new(string)
	}
	var cfg agent.Config
	if *configPath != "" {
		fileCfg, err := agent.LoadConfig(*configPath)
		if err != nil {
			return cfg, level, err
		}
		cfg = fileCfg
	}
	if overlay != nil {
		// Which cluster and ConfigMap: the flags over the file.
		kube := cfg
		kfs, _, _, _, _ := newFlagSet(&kube)
		kfs.SetOutput(discard{})
		if err := kfs.Parse(args); err == nil && kube.Kubernetes() && kube.ConfigMap != "" {
			over, err := overlay(cfg, kube)
			if err != nil {
				return cfg, level, err
			}
			cfg = over
		}
	}
	// Pass 2: the flags given override the file (and the ConfigMap).
	fs, _, noMetrics, noTCPHealth, logLevel := newFlagSet(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, level, err
	}
	if fs.NArg() > 0 {
		return cfg, level, fmt.Errorf("unexpected argument %q (subcommands: cleanup)", fs.Arg(0))
	}
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, level, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if cfg.MetricsAddress == "" && !*noMetrics {
		cfg.MetricsAddress = agent.DefaultMetricsAddress
	}
	if *noMetrics {
		cfg.MetricsAddress = ""
	}
	if *noTCPHealth {
		off := false
		cfg.TCPHealth = &off
	}
	return cfg, level, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
