// Command moat-operator runs moat's cluster-wide work (identity garbage
// collection, policy status) as one leader-elected replica among several;
// see package k8s/operator.
//
//	moat-operator [--kubeconfig FILE] [--namespace NS] [--identity-gc-grace 15m]
//	              [--metrics-address :9963]
//
// Without --kubeconfig it uses the in-cluster configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/moatnet/moat/k8s/identity"
	"github.com/moatnet/moat/k8s/operator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "moat-operator:", err)
		os.Exit(1)
	}
}

type options struct {
	cfg        operator.Config
	kubeconfig string
	exclude    string
	logLevel   slog.Level
}

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("moat-operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
	fs.StringVar(&o.cfg.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader-election lease (default $POD_NAMESPACE)")
	fs.StringVar(&o.cfg.Identity, "leader-election-id", os.Getenv("POD_NAME"), "this replica's name in the lease (default $POD_NAME, else hostname_pid)")
	fs.StringVar(&o.cfg.LeaseName, "leader-election-lease", "moat-operator", "leader-election Lease name")
	fs.DurationVar(&o.cfg.LeaseDuration, "leader-election-lease-duration", 0, "lease duration (default 15s)")
	fs.DurationVar(&o.cfg.RenewDeadline, "leader-election-renew-deadline", 0, "renew deadline (default 10s)")
	fs.DurationVar(&o.cfg.RetryPeriod, "leader-election-retry-period", 0, "retry period (default 2s)")
	fs.DurationVar(&o.cfg.IdentityGCGrace, "identity-gc-grace", 0, "how long an identity stays unused before it is deleted (default 15m)")
	fs.DurationVar(&o.cfg.IdentityGCInterval, "identity-gc-interval", 0, "period of the identity GC pass (default 1m, at most the grace)")
	fs.StringVar(&o.exclude, "identity-exclude-labels", strings.Join(identity.DefaultExcludedLabels, ","),
		"pod labels left out of security label sets, comma-separated (\"prefix*\" allowed); must match the agents'")
	fs.StringVar(&o.cfg.MetricsAddress, "metrics-address", "", "serve moat_operator_* metrics on this host:port (empty: off)")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log level (debug, info, warn, error)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	o.cfg.LabelFilter.Exclude = []string{}
	for _, e := range strings.Split(o.exclude, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.cfg.LabelFilter.Exclude = append(o.cfg.LabelFilter.Exclude, e)
		}
	}
	return o, nil
}

// run parses args and runs the operator until ctx ends (SIGTERM or
// SIGINT in main): the lease is released and the metrics server closed
// before it returns.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	var rc *rest.Config
	if o.kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("client configuration: %w", err)
	}
	o.cfg.REST = rc
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	o.cfg.Logger.Info("moat-operator starting", "namespace", o.cfg.Namespace, "replica", o.cfg.Identity)
	err = operator.Run(ctx, o.cfg)
	o.cfg.Logger.Info("moat-operator stopped")
	return err
}
