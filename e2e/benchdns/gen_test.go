package main

import (
	"strings"
	"testing"
	"time"

	"github.com/moatnet/moat/policy"
	"github.com/moatnet/moat/policy/fqdn"
)

// TestPolicyYAML: the generated policy parses, has the configured number
// of rules.dns entries and toFQDNs selectors, its rules allow every query
// name of both files, and its selectors select exactly the "selected"
// file's names.
func TestPolicyYAML(t *testing.T) {
	cfg := DefaultConfig()
	cfg.AgentBinary = "x"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pols, err := policy.ParseBytes("bench.yaml", []byte(policyYAML(cfg)))
	if err != nil {
		t.Fatalf("parse the generated policy: %v", err)
	}
	if len(pols) != 1 {
		t.Fatalf("%d policies, want 1", len(pols))
	}
	var names, patterns, selNames, selPatterns []string
	var egress []policy.PeerRule
	for _, r := range pols[0].Rules {
		egress = append(egress, r.Egress...)
	}
	for _, r := range egress {
		for _, pr := range r.Ports {
			for _, d := range pr.DNS {
				if d.MatchName != "" {
					names = append(names, d.MatchName)
				} else {
					patterns = append(patterns, d.MatchPattern)
				}
			}
		}
		for _, f := range r.Peers.FQDNs {
			if f.MatchName != "" {
				selNames = append(selNames, f.MatchName)
			} else {
				selPatterns = append(selPatterns, f.MatchPattern)
			}
		}
	}
	if len(names)+len(patterns) != cfg.Patterns || len(patterns) != cfg.Patterns/2 {
		t.Fatalf("%d matchName + %d matchPattern entries; want %d in all, half patterns", len(names), len(patterns), cfg.Patterns)
	}
	if len(selNames)+len(selPatterns) != cfg.Selected {
		t.Fatalf("%d toFQDNs selectors, want %d", len(selNames)+len(selPatterns), cfg.Selected)
	}
	rules, err := fqdn.NewMatcher(names, patterns)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := fqdn.NewMatcher(selNames, selPatterns)
	if err != nil {
		t.Fatal(err)
	}
	for _, selected := range []bool{false, true} {
		qs := queryNames(cfg, selected)
		if len(qs) != cfg.Names {
			t.Fatalf("%d names, want %d", len(qs), cfg.Names)
		}
		distinct := map[string]bool{}
		for _, q := range qs {
			distinct[q] = true
			if !rules.Match(q) {
				t.Fatalf("%s (selected=%v) is not allowed by the rules", q, selected)
			}
			if sel.Match(q) != selected {
				t.Fatalf("%s: selected by toFQDNs = %v, want %v", q, sel.Match(q), selected)
			}
		}
		if len(distinct) < cfg.Names*9/10 {
			t.Fatalf("selected=%v: %d distinct names of %d", selected, len(distinct), cfg.Names)
		}
		if rules.Match(probeName) {
			t.Fatalf("the probe name %s is allowed; it must be refused", probeName)
		}
	}
	f := queryFile(cfg, queryNames(cfg, false)[:10])
	if strings.Count(f, " AAAA\n") != 2 || strings.Count(f, " A\n") != 8 {
		t.Fatalf("query file with aaaa-every 5:\n%s", f)
	}
	if _, err := policy.ParseEndpoints("endpoints.yaml", []byte(endpointsYAML())); err != nil {
		t.Fatalf("parse the endpoints file: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.AgentBinary = "moat-agent"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := good.Quick().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"-agent":    func(c *Config) { c.AgentBinary = "" },
		"-duration": func(c *Config) { c.Duration = 100 * time.Millisecond },
		"-selected": func(c *Config) { c.Selected = c.Patterns },
		"-ttl":      func(c *Config) { c.TTL = 1500 * time.Millisecond },
		"-ips":      func(c *Config) { c.IPs = 0 },
		"-clients":  func(c *Config) { c.Outstanding = 1; c.Clients = 2 },
		"-rate":     func(c *Config) { c.Rate = 0 },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v; want an error naming it", name, err)
		}
	}
}
