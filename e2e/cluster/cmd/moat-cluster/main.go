// Command moat-cluster runs the local multi-node Kubernetes cluster of the
// cluster e2e suite (package e2e/cluster/harness):
//
//	moat-cluster up     [-nodes 2] [-bins DIR] [-cni-conflist FILE] [-cni-bin-dir DIR]... [-image TAR]... [-no-kube-proxy]
//	moat-cluster status
//	moat-cluster down
//
// up prints the admin kubeconfig's path on its last line. Every command
// takes -state-dir (default /var/run/moat-cluster). It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/moatnet/moat/e2e/cluster/harness"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "moat-cluster:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: moat-cluster up|down|status [flags]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("moat-cluster "+cmd, flag.ContinueOnError)
	var cfg harness.Config
	var images, cniDirs list
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/run/moat-cluster", "state directory (PKI, configs, logs, PIDs, node dirs)")
	fs.StringVar(&cfg.BinDir, "bins", os.Getenv("MOAT_K8S_BINS"), "directory printed by scripts/k8s-bins.sh (default $MOAT_K8S_BINS)")
	fs.IntVar(&cfg.Nodes, "nodes", 2, "number of nodes, 1 to 4")
	fs.StringVar(&cfg.CNIConfList, "cni-conflist", "", "CNI conflist template (text/template over harness.NodeData); default Debian bridge + host-local")
	fs.Var(&cniDirs, "cni-bin-dir", "directory of CNI plugins (repeatable; default /usr/lib/cni)")
	fs.Var(&images, "image", "extra image tarball to import into every node (repeatable)")
	fs.BoolVar(&cfg.NoKubeProxy, "no-kube-proxy", false, "run no kube-proxy (ClusterIPs need another translator; kube-dns is not waited for)")
	fs.StringVar(&cfg.ImageCache, "image-cache", "/var/cache/moat/cluster-images", "where built images are kept, keyed by their inputs")
	fs.IntVar(&cfg.CoreDNSReplicas, "coredns-replicas", 2, "replicas of the kube-dns Deployment")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg.ExtraImages, cfg.CNIBinDirs = images, cniDirs
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg = cfg.WithDefaults()
	if os.Geteuid() != 0 {
		return errors.New("needs root (netns, cgroups, containerd)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch cmd {
	case "up":
		start := time.Now()
		if err := cfg.Up(ctx); err != nil {
			if errors.Is(err, harness.ErrRefused) {
				return err
			}
			return fmt.Errorf("up: %w\nlogs: %s/logs; run `moat-cluster down` to clean up", err, cfg.StateDir)
		}
		fmt.Fprintf(os.Stderr, "cluster of %d nodes up in %s\n", cfg.Nodes, time.Since(start).Round(time.Millisecond))
		fmt.Println(cfg.Kubeconfig())
		return nil
	case "down":
		start := time.Now()
		// Down must finish even when the caller's deadline is near.
		if err := cfg.Down(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("down: %w", err)
		}
		fmt.Fprintf(os.Stderr, "cluster down, host restored, in %s\n", time.Since(start).Round(time.Millisecond))
		return nil
	case "status":
		return cfg.Status(ctx)
	default:
		return fmt.Errorf("unknown command %q: want up, down or status", cmd)
	}
}
