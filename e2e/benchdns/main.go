package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// Config is one run's shape.
type Config struct {
	AgentBinary string        `json:"-"`
	Duration    time.Duration `json:"-"` // reported as durationSeconds
	Rounds      int           `json:"rounds"`
	// Rate is the fixed query rate of the latency runs (dnsperf -Q).
	Rate int `json:"rate"`
	// Patterns is the number of rules.dns entries; Selected the number of
	// zones the toFQDNs selectors select.
	Patterns int `json:"patterns"`
	Selected int `json:"selectedZones"`
	// Names is the number of distinct query names per scenario.
	Names int `json:"names"`
	// AAAAEvery: every n-th query asks AAAA (0: none).
	AAAAEvery int `json:"aaaaEvery"`
	// IPs per answer, their TTL and how often they rotate (0: never).
	IPs    int           `json:"ipsPerAnswer"`
	TTL    time.Duration `json:"-"`
	Rotate time.Duration `json:"-"`
	// Clients and Outstanding shape the max-throughput runs (dnsperf -c, -q).
	Clients     int  `json:"clients"`
	Outstanding int  `json:"outstanding"`
	Profile     bool `json:"profile"`
	// Keep leaves the run directory (agent log, perf data) in place.
	Keep        bool   `json:"-"`
	NetnsPrefix string `json:"-"`
	PinRoot     string `json:"-"`
	JSONPath    string `json:"-"`
	Verbose     bool   `json:"-"`
}

// DefaultConfig is a full run: about six minutes.
func DefaultConfig() Config {
	return Config{
		Duration: 10 * time.Second, Rounds: 2, Rate: 5000,
		Patterns: 1000, Selected: 50, Names: 1000, AAAAEvery: 5,
		IPs: 4, TTL: 2 * time.Second, Rotate: 2 * time.Second,
		Clients: 8, Outstanding: 200, Profile: true,
		NetnsPrefix: "mbdns-", PinRoot: "/sys/fs/bpf/moat-benchdns",
	}
}

// Quick shrinks a run to about a minute, for a smoke test.
func (c Config) Quick() Config {
	c.Duration = 3 * time.Second
	c.Rounds = 1
	c.Rate = 1000
	c.Names = 200
	return c
}

// Validate names what is wrong.
func (c Config) Validate() error {
	var errs []error
	if c.AgentBinary == "" {
		errs = append(errs, errors.New("-agent: the moat-agent binary is required (make bench-dns builds it)"))
	}
	if c.Duration < time.Second || c.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("-duration %s: want 1s to 10m (dnsperf -l takes whole seconds)", c.Duration))
	}
	if c.Rounds < 1 || c.Rounds > 20 {
		errs = append(errs, fmt.Errorf("-rounds %d: want 1 to 20", c.Rounds))
	}
	if c.Rate < 10 || c.Rate > 1_000_000 {
		errs = append(errs, fmt.Errorf("-rate %d: want 10 to 1000000 qps", c.Rate))
	}
	if c.Patterns < 2 || c.Patterns > 100_000 {
		errs = append(errs, fmt.Errorf("-patterns %d: want 2 to 100000", c.Patterns))
	}
	if zones := c.Patterns / 2; c.Selected < 1 || c.Selected >= zones {
		errs = append(errs, fmt.Errorf("-selected %d: want 1 to %d (fewer than the %d pattern zones, so that some names are not selected)", c.Selected, zones-1, zones))
	}
	if c.Names < 1 || c.Names > 1_000_000 {
		errs = append(errs, fmt.Errorf("-names %d: want 1 to 1000000", c.Names))
	}
	if c.AAAAEvery < 0 {
		errs = append(errs, fmt.Errorf("-aaaa-every %d: want 0 (none) or more", c.AAAAEvery))
	}
	if c.IPs < 1 || c.IPs > 32 {
		errs = append(errs, fmt.Errorf("-ips %d: want 1 to 32 addresses per answer", c.IPs))
	}
	if c.TTL < time.Second || c.TTL > time.Hour || c.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("-ttl %s: want whole seconds from 1s to 1h", c.TTL))
	}
	if c.Rotate < 0 {
		errs = append(errs, fmt.Errorf("-rotate %s: want 0 (never) or a duration", c.Rotate))
	}
	if c.Clients < 1 || c.Outstanding < c.Clients {
		errs = append(errs, fmt.Errorf("-clients %d, -outstanding %d: want clients >= 1 and outstanding >= clients", c.Clients, c.Outstanding))
	}
	if c.NetnsPrefix == "" || c.PinRoot == "" {
		errs = append(errs, errors.New("-netns-prefix and -pin-root must not be empty"))
	}
	return errors.Join(errs...)
}

func main() {
	if err := mainErr(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "benchdns:", err)
		os.Exit(1)
	}
}

func mainErr(args []string, stdout, stderr io.Writer) error {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("benchdns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.AgentBinary, "agent", "", "moat-agent binary")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each dnsperf run")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "rounds of a b c c b a (medians reported)")
	fs.IntVar(&cfg.Rate, "rate", cfg.Rate, "query rate of the latency runs (dnsperf -Q)")
	fs.IntVar(&cfg.Patterns, "patterns", cfg.Patterns, "rules.dns entries in the policy (half matchPattern, half matchName)")
	fs.IntVar(&cfg.Selected, "selected", cfg.Selected, "pattern zones that toFQDNs selects")
	fs.IntVar(&cfg.Names, "names", cfg.Names, "distinct query names per scenario")
	fs.IntVar(&cfg.AAAAEvery, "aaaa-every", cfg.AAAAEvery, "every n-th query asks AAAA (0: none)")
	fs.IntVar(&cfg.IPs, "ips", cfg.IPs, "addresses per answer")
	fs.DurationVar(&cfg.TTL, "ttl", cfg.TTL, "TTL of the answers")
	fs.DurationVar(&cfg.Rotate, "rotate", cfg.Rotate, "the answers' addresses change this often (0: never)")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "dnsperf clients (sockets) in the max-throughput runs")
	fs.IntVar(&cfg.Outstanding, "outstanding", cfg.Outstanding, "dnsperf outstanding queries in the max-throughput runs")
	fs.BoolVar(&cfg.Profile, "profile", cfg.Profile, "profile the agent with perf record in one extra run of (b) and (c)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the run directory (agent log, perf data)")
	fs.StringVar(&cfg.NetnsPrefix, "netns-prefix", cfg.NetnsPrefix, "prefix of the agent's netns")
	fs.StringVar(&cfg.PinRoot, "pin-root", cfg.PinRoot, "the agent's bpffs pin root")
	fs.StringVar(&cfg.JSONPath, "json", "", "also write the report as JSON to `file`")
	quick := fs.Bool("quick", false, "short runs, one round (smoke test)")
	fs.BoolVar(&cfg.Verbose, "v", false, "progress on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *quick {
		cfg = cfg.Quick()
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("validate flags: %w", err)
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		return errors.New("dnsperf not found: install Debian's dnsperf package (apt-get install dnsperf)")
	}
	for _, tool := range []string{"ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("find %s: %w", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the agent loads BPF programs and the bench makes network namespaces")
	}
	level := slog.LevelInfo
	if !cfg.Verbose {
		level = slog.LevelWarn
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
