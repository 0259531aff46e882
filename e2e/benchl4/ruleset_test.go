package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
)

func TestRuleSet(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		shift   uint16
		wantErr bool
	}{
		{name: "allowed flows only", n: 3},
		{name: "1k", n: 1000},
		{name: "10k", n: 10000},
		{name: "10k shifted", n: 10000, shift: replaceShift},
		{name: "too few", n: 2, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rules, err := RuleSet(tc.n, tc.shift)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("RuleSet(%d) = %d rules, want an error", tc.n, len(rules))
				}
				return
			}
			if err != nil {
				t.Fatalf("RuleSet(%d): %v", tc.n, err)
			}
			if len(rules) != tc.n {
				t.Fatalf("got %d rules, want %d", len(rules), tc.n)
			}
			seen := map[Rule]bool{}
			remotes := map[int]bool{}
			for _, r := range rules {
				if seen[r] {
					t.Fatalf("duplicate rule %+v", r)
				}
				seen[r] = true
				remotes[r.Remote] = true
				if r.Remote < 0 || r.Remote >= Identities {
					t.Fatalf("rule %+v: remote out of range", r)
				}
			}
			if want := min(tc.n-len(allowedRules()), Identities); tc.n > 3 && len(remotes) != want {
				t.Errorf("rules use %d identities, want %d", len(remotes), want)
			}
			allowed := allowedRules()
			if got := rules[len(rules)-len(allowed):]; !equalRules(got, allowed) {
				t.Errorf("last rules = %+v, want the allowed flows %+v", got, allowed)
			}
		})
	}
}

func equalRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPlanDatapathState checks that the plan is one the datapath accepts,
// with one policy entry per rule plus the client's, and ipcache entries for
// all identities.
func TestPlanDatapathState(t *testing.T) {
	for _, n := range []int{1000, 10000} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			rules, err := RuleSet(n, 0)
			if err != nil {
				t.Fatal(err)
			}
			ifaces := map[datapath.EndpointKey]int{
				{Namespace: benchNamespace, Name: clientName}: 10,
				{Namespace: benchNamespace, Name: serverName}: 11,
			}
			st, err := datapath.DesiredState(Plan(rules), ifaces, nil)
			if err != nil {
				t.Fatalf("DesiredState: %v", err)
			}
			if got, want := len(st.Policy), n+len(allowedRules()); got != want {
				t.Errorf("policy entries = %d, want %d", got, want)
			}
			if got, want := len(st.IPCache), Identities+1; got != want {
				t.Errorf("ipcache entries = %d, want %d", got, want)
			}
			key := datapath.PolicyKey{Endpoint: 11, Direction: policy.Ingress, Identity: remoteID(0), Proto: policy.ProtoTCP,
				Ports: datapath.PortBlocks(policy.L4Key{Proto: policy.ProtoTCP, Ports: policy.PortRange{From: httpPort, To: httpPort}})[0]}
			if e, ok := st.Policy[key]; !ok || e.Value.Verdict != policy.VerdictAllow {
				t.Errorf("no allow entry for the client's HTTP flow (%v)", key)
			}
		})
	}
}

func TestIptablesRestore(t *testing.T) {
	rules, err := RuleSet(10, 0)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(IptablesRestore(rules)), "\n")
	if got, want := len(lines), len(rules)+4; got != want {
		t.Fatalf("got %d lines, want %d:\n%s", got, want, strings.Join(lines, "\n"))
	}
	checks := []struct {
		name string
		line string
		want string
	}{
		{name: "table", line: lines[0], want: "*filter"},
		{name: "established first", line: lines[1], want: "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"},
		{name: "first filler", line: lines[2], want: "-A FORWARD -s 10.239.0.1/32 -d 10.239.100.1/32 -p tcp -m tcp --dport 20000 -j ACCEPT"},
		{name: "allowed udp flow last", line: lines[len(lines)-3], want: "-A FORWARD -s 10.239.0.1/32 -d 10.239.100.1/32 -p udp -m udp --dport 5201 -j ACCEPT"},
		{name: "drop", line: lines[len(lines)-2], want: "-A FORWARD -j DROP"},
		{name: "commit", line: lines[len(lines)-1], want: "COMMIT"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.line != c.want {
				t.Errorf("got %q, want %q", c.line, c.want)
			}
		})
	}
}
