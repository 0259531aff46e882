package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchl4:", err)
		os.Exit(1)
	}
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("benchl4", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each measurement")
	rules := fs.String("rules", "1000,10000", "comma-separated policy sizes N")
	quick := fs.Bool("quick", false, "tiny durations and sizes (smoke test)")
	fs.StringVar(&cfg.JSONPath, "json", "", "also write the report as JSON to `file`")
	fs.IntVar(&cfg.WrkThreads, "wrk-threads", cfg.WrkThreads, "wrk threads")
	fs.IntVar(&cfg.WrkConns, "wrk-connections", cfg.WrkConns, "wrk connections")
	fs.IntVar(&cfg.ReplaceRepeats, "replace-repeats", cfg.ReplaceRepeats, "policy replacements to time (median reported)")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "a/b/c rounds per size (medians of rates and of per-round ratios reported)")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", cfg.NetnsPrefix, "prefix of the bench's netns names")
	fs.StringVar(&cfg.PinRoot, "pin-root", cfg.PinRoot, "bpffs directory for the bench's pins")
	verbose := fs.Bool("v", false, "log progress at debug level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if cfg.Rules, err = ParseRules(*rules); err != nil {
		return err
	}
	if *quick {
		cfg = cfg.Quick()
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("validate flags: %w", err)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, log)
	if rep != nil {
		rep.WriteTable(stdout)
		if cfg.JSONPath != "" {
			if jerr := rep.WriteJSONFile(cfg.JSONPath); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	return err
}
