package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/datapath"
)

// cleanup removes what the agent of one pin root owns: its programs, links
// and pins, and (with --netns-prefix) its endpoints. It refuses while that
// agent runs (it takes the agent's lock, and holds it meanwhile), and it
// leaves alone what other agents use: the host's proxy routing while any
// agent holds a reference on it, and moat's legacy tc filters (which carry
// no owner) while another agent runs.
func cleanup(args []string) error {
	fs := flag.NewFlagSet("moat-agent cleanup", flag.ContinueOnError)
	root := fs.String("bpf-root", datapath.DefaultPinRoot, "bpffs pin directory")
	prefix := fs.String("netns-prefix", "", "also delete the endpoint network namespaces with this prefix (standalone mode)")
	nodeRoutes := fs.Bool("node-routes", false, "also delete the routes to other nodes' pod CIDRs (Kubernetes mode --node-routes; only when no agent of this node runs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cleanup: unexpected argument %q", fs.Arg(0))
	}
	lock, err := agent.LockNode(agent.LockDir, *root)
	if err != nil {
		return fmt.Errorf("cleanup refused: an agent runs on %s: stop it first: %w", *root, err)
	}
	defer lock.Release()

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
		fmt.Printf("removed %d endpoints with netns prefix %q\n", len(removed), *prefix)
		switch err := m.RemoveProxyRouting(ctx); {
		case errors.Is(err, datapath.ErrProxyRoutingInUse):
			fmt.Println("kept the proxy routing rule: a running agent uses it")
		case err != nil:
			return fmt.Errorf("cleanup proxy routing: %w", err)
		default:
			fmt.Println("removed the proxy routing rule")
		}
	}
	cfg := datapath.DefaultConfig()
	cfg.PinRoot = *root
	others, err := agent.OtherAgents(agent.LockDir, *root)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	opts := datapath.CleanupOptions{KeepTCFilters: len(others) > 0}
	start := time.Now()
	if err := datapath.CleanupWith(cfg, opts); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	fmt.Printf("removed moat's programs, links and pins under %s in %s\n", *root, time.Since(start).Round(time.Millisecond))
	if opts.KeepTCFilters {
		fmt.Printf("kept moat's legacy tc filters: other agents run (%v)\n", others)
	}
	if *nodeRoutes {
		if err := agent.RemoveNodeRoutes(); err != nil {
			return fmt.Errorf("cleanup node routes: %w", err)
		}
		fmt.Println("removed moat's routes to other nodes' pod CIDRs")
	}
	return nil
}
