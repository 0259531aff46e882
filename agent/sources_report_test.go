package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSourceProblemsReported: a bad endpoints file shows in the status and
// in moat_policy_errors for as long as it stays bad; each problem is logged
// once, not on every poll; and the message says truthfully whether an
// earlier version stays in force.
func TestSourceProblemsReported(t *testing.T) {
	h := newOrderHarness(t, 0)
	var logs bytes.Buffer
	h.a.log = slog.New(slog.NewTextHandler(&logs, nil))
	a := h.a
	polls := func(n int) {
		for range n {
			a.refreshSources(t.Context())
		}
	}

	// A policy file that was never valid, and endpoints that are fine.
	writeFile(t, h.policy, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web}\nspec: {endpointSelector: {}, bogus: 1}\n")
	polls(3)
	st := a.Status()
	if len(st.PolicyErrors) != 1 || !strings.Contains(st.PolicyErrors[0], "nothing from this file is in force") {
		t.Errorf("never-valid policy file: status %q, want it to say nothing from it is in force", st.PolicyErrors)
	}
	if strings.Contains(logs.String(), "previous version") {
		t.Errorf("log claims a previous version of a never-valid file:\n%s", logs.String())
	}
	// Fixed, then broken again: now a previous version exists.
	writeFile(t, h.policy, orderPolicy(9000))
	polls(1)
	writeFile(t, h.policy, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: web}\nspec: {endpointSelector: {}, bogus: 2}\n")
	polls(3)
	st = a.Status()
	if len(st.PolicyErrors) != 1 || !strings.Contains(st.PolicyErrors[0], "previous version of this file stays in force") {
		t.Errorf("broken policy file with a good past: status %q", st.PolicyErrors)
	}
	writeFile(t, h.policy, orderPolicy(9000))
	polls(1)

	// The endpoints file breaks: status and metric say so on every poll,
	// the log once.
	logs.Reset()
	writeFile(t, a.cfg.Endpoints, "endpoints:\n- name: web\n  ipv4: not-an-address\n")
	polls(5)
	st = a.Status()
	if len(st.PolicyErrors) != 1 || !strings.Contains(st.PolicyErrors[0], "not-an-address") ||
		!strings.Contains(st.PolicyErrors[0], "previous version of the endpoints file stays in force") {
		t.Errorf("bad endpoints file after 5 polls: status %q, want the error and the previous version in force", st.PolicyErrors)
	}
	if got := promtestutil.ToFloat64(a.m.policyErrors); got != 1 {
		t.Errorf("moat_policy_errors = %v, want 1", got)
	}
	if n := strings.Count(logs.String(), "not-an-address"); n != 1 {
		t.Errorf("the endpoints error was logged %d times over 5 polls, want once:\n%s", n, logs.String())
	}
	// Fixed: the status and the metric clear, and the log says so once.
	writeFile(t, a.cfg.Endpoints, orderEndpoints)
	polls(2)
	if st := a.Status(); len(st.PolicyErrors) != 0 {
		t.Errorf("fixed endpoints file: status still %q", st.PolicyErrors)
	}
	if got := promtestutil.ToFloat64(a.m.policyErrors); got != 0 {
		t.Errorf("moat_policy_errors after the fix = %v, want 0", got)
	}
	if n := strings.Count(logs.String(), "problem gone"); n != 1 {
		t.Errorf("the fix was logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestSourceProblemsNoEarlierEndpoints: an endpoints file that was never
// valid says that no endpoints are in force.
func TestSourceProblemsNoEarlierEndpoints(t *testing.T) {
	h := newOrderHarness(t, 0)
	writeFile(t, h.a.cfg.Endpoints, "endpoints:\n- name: web\n  ipv4: not-an-address\n")
	h.a.refreshSources(t.Context())
	h.a.refreshSources(t.Context())
	st := h.a.Status()
	if len(st.PolicyErrors) != 1 || !strings.Contains(st.PolicyErrors[0], "no endpoints are in force") {
		t.Errorf("never-valid endpoints file: status %q", st.PolicyErrors)
	}
}
