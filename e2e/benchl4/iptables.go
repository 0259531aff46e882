package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// inNetns returns a command that runs name inside the netns at nsPath
// (nsenter leaves the mount namespace and /sys alone, unlike ip netns exec).
func inNetns(ctx context.Context, nsPath, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, "--", name}, args...)...)
}

// iptablesApply loads the rules into the FORWARD chain of the host netns and
// returns how long iptables-restore took.
func iptablesApply(ctx context.Context, nsPath string, rules []Rule) (time.Duration, error) {
	cmd := inNetns(ctx, nsPath, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(IptablesRestore(rules))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("load %d iptables rules: %w: %s", len(rules), err, tail(out))
	}
	return took, nil
}

// iptablesRemove deletes every rule the bench added: it flushes FORWARD in
// the bench's own host netns (which holds nothing else) and, with the
// nf_tables backend, deletes the filter table so that its empty base chains
// cost nothing in the next measurement. A missing netns is not an error.
func iptablesRemove(ctx context.Context, nsPath string) error {
	out, err := inNetns(ctx, nsPath, "iptables", "-w", "-F", "FORWARD").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file") || strings.Contains(string(out), "reopen") {
			return nil
		}
		return fmt.Errorf("flush iptables FORWARD: %w: %s", err, tail(out))
	}
	if v, err := exec.CommandContext(ctx, "iptables", "-V").Output(); err == nil && strings.Contains(string(v), "nf_tables") {
		if _, err := exec.LookPath("nft"); err == nil {
			if out, err := inNetns(ctx, nsPath, "nft", "delete", "table", "ip", "filter").CombinedOutput(); err != nil &&
				!strings.Contains(string(out), "No such file") {
				return fmt.Errorf("delete nft table ip filter: %w: %s", err, tail(out))
			}
		}
	}
	return nil
}

// iptablesVersion names the iptables in use, for the report.
func iptablesVersion(ctx context.Context) string {
	v, err := exec.CommandContext(ctx, "iptables", "-V").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(v))
}

// tail returns the last few hundred bytes of a command's output.
func tail(out []byte) string {
	s := strings.TrimSpace(string(out))
	if len(s) > 600 {
		s = "…" + s[len(s)-600:]
	}
	return s
}
