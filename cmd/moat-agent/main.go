// Command moat-agent is moat's node agent. In standalone mode (the default)
// it reads policies from a watched directory and endpoints from a file,
// creates the endpoints' network namespaces, enforces L3/L4 policy in BPF and
// drives the L7 proxy over xDS.
//
//	moat-agent --config /etc/moat/agent.yaml
//	moat-agent --policies DIR --endpoints FILE [flags]
//	moat-agent cleanup          detach programs and remove pinned state
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/datapath"
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
	fs := flag.NewFlagSet("moat-agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "agent config file (YAML); flags override it")
	var cfg agent.Config
	fs.StringVar(&cfg.NodeName, "node-name", "", "node name, the xDS node ID (default: hostname)")
	fs.StringVar(&cfg.Policies, "policies", "", "policy file or directory to watch")
	fs.StringVar(&cfg.Endpoints, "endpoints", "", "endpoints file to watch")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "state directory (default "+agent.DefaultStateDir+")")
	fs.StringVar(&cfg.RunDir, "run-dir", "", "socket directory (default "+agent.DefaultRunDir+")")
	fs.StringVar(&cfg.BPFRoot, "bpf-root", "", "bpffs pin directory (default "+datapath.DefaultPinRoot+")")
	fs.StringVar(&cfg.MetricsAddress, "metrics-address", "", "serve /metrics here (default "+agent.DefaultMetricsAddress+")")
	fs.StringVar(&cfg.XDSAddress, "xds-address", "", "also serve xDS on this loopback TCP address")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", "", "prefix of the network namespaces the agent creates")
	fs.StringVar(&cfg.Proxy, "proxy", "", "HTTP proxy: embedded (default), envoy (run --envoy-binary) or external")
	fs.StringVar(&cfg.EnvoyBinary, "envoy-binary", "", "Envoy executable for --proxy envoy")
	fs.StringVar(&cfg.HTTPPaths, "http-paths", "", "HTTP path handling: strict (default: ambiguous paths get 400) or envoy (Envoy's exact behaviour)")
	fs.BoolVar(&cfg.VerdictEvents, "verdict-events", false, "report every new flow's verdict, not only drops")
	noMetrics := fs.Bool("no-metrics", false, "do not serve /metrics")
	noTCPHealth := fs.Bool("no-tcp-health", false, "do not attach the TCP health (sock_ops) program")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (subcommands: cleanup)", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if *configPath != "" {
		fileCfg, err := agent.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		cfg = overlay(fileCfg, cfg)
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
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("moat-agent starting", "policies", cfg.Policies, "endpoints", cfg.Endpoints)
	if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("moat-agent stopped; BPF enforcement stays in place (moat-agent cleanup removes it)")
	return nil
}

// overlay returns base with every non-zero string/bool field of flags set.
func overlay(base, flags agent.Config) agent.Config {
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&base.NodeName, flags.NodeName)
	set(&base.Policies, flags.Policies)
	set(&base.Endpoints, flags.Endpoints)
	set(&base.StateDir, flags.StateDir)
	set(&base.RunDir, flags.RunDir)
	set(&base.BPFRoot, flags.BPFRoot)
	set(&base.MetricsAddress, flags.MetricsAddress)
	set(&base.XDSAddress, flags.XDSAddress)
	set(&base.NetnsPrefix, flags.NetnsPrefix)
	set(&base.Proxy, flags.Proxy)
	set(&base.EnvoyBinary, flags.EnvoyBinary)
	base.VerdictEvents = base.VerdictEvents || flags.VerdictEvents
	return base
}

func cleanup(args []string) error {
	fs := flag.NewFlagSet("moat-agent cleanup", flag.ContinueOnError)
	root := fs.String("bpf-root", datapath.DefaultPinRoot, "bpffs pin directory")
	prefix := fs.String("netns-prefix", "", "also delete the endpoint network namespaces with this prefix (standalone mode)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prefix != "" {
		ecfg := datapath.DefaultEndpointConfig()
		ecfg.NetnsPrefix = *prefix
		m, err := datapath.NewEndpointManager(ecfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		if err != nil {
			return fmt.Errorf("cleanup endpoints: %w", err)
		}
		defer m.Close()
		ctx := context.Background()
		removed, err := m.Prune(ctx, nil)
		if err != nil {
			return fmt.Errorf("cleanup endpoints: %w", err)
		}
		if err := m.RemoveProxyRouting(ctx); err != nil {
			return fmt.Errorf("cleanup proxy routing: %w", err)
		}
		fmt.Printf("removed %d endpoints with netns prefix %q and the proxy routing rule\n", len(removed), *prefix)
	}
	cfg := datapath.DefaultConfig()
	cfg.PinRoot = *root
	start := time.Now()
	if err := datapath.Cleanup(cfg); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	fmt.Printf("removed moat's programs, links and pins under %s in %s\n", *root, time.Since(start).Round(time.Millisecond))
	return nil
}
