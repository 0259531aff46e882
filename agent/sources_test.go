package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
)

const goodPolicy = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: %s}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
`

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func names(s *policySource) []string {
	var out []string
	for _, p := range s.policies() {
		out = append(out, p.Name)
	}
	return out
}

func TestPolicySourceKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	b := filepath.Join(dir, "b.yaml")
	writeFile(t, a, fmt.Sprintf(goodPolicy, "a1"))
	writeFile(t, b, fmt.Sprintf(goodPolicy, "b1"))
	s := newPolicySource(dir)

	changed, errs := s.refresh()
	if !changed || len(errs) != 0 {
		t.Fatalf("first refresh: changed=%v errs=%v", changed, errs)
	}
	if got := names(s); len(got) != 2 || got[0] != "a1" || got[1] != "b1" {
		t.Fatalf("policies %v", got)
	}

	// Unchanged content: no change reported.
	if changed, errs := s.refresh(); changed || len(errs) != 0 {
		t.Fatalf("no-op refresh: changed=%v errs=%v", changed, errs)
	}

	// A broken file keeps its previous policy and reports the error each time.
	writeFile(t, a, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a2}\nspec: {endpointSelector: {}, bogus: 1}\n")
	for i := 0; i < 2; i++ {
		changed, errs = s.refresh()
		if changed || len(errs) != 1 {
			t.Fatalf("broken refresh %d: changed=%v errs=%v", i, changed, errs)
		}
	}
	if got := names(s); len(got) != 2 || got[0] != "a1" {
		t.Fatalf("after a bad edit, policies %v; want a1 still in force", got)
	}

	// Fixing it applies the new version.
	writeFile(t, a, fmt.Sprintf(goodPolicy, "a2"))
	if changed, errs := s.refresh(); !changed || len(errs) != 0 {
		t.Fatalf("fixed refresh: changed=%v errs=%v", changed, errs)
	}
	if got := names(s); got[0] != "a2" {
		t.Fatalf("policies %v, want a2", got)
	}

	// Deleting a file removes its policies.
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if changed, _ := s.refresh(); !changed {
		t.Fatal("delete not seen")
	}
	if got := names(s); len(got) != 1 {
		t.Fatalf("policies %v after delete", got)
	}

	// A vanished directory keeps everything in force.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if changed, errs := s.refresh(); changed || len(errs) != 1 {
		t.Fatalf("missing dir: changed=%v errs=%v", changed, errs)
	}
	if len(names(s)) != 1 {
		t.Fatal("policies dropped when the directory vanished")
	}
}

func TestEndpointsSourceKeepsLastGood(t *testing.T) {
	p := filepath.Join(t.TempDir(), "endpoints.yaml")
	writeFile(t, p, "endpoints:\n- {name: web, labels: {app: web}, ipv4: 10.9.0.1}\n")
	s := endpointsSource{path: p}
	eps, changed, err := s.refresh()
	if err != nil || !changed || len(eps.Endpoints) != 1 {
		t.Fatalf("first: %v %v %v", eps, changed, err)
	}
	writeFile(t, p, "endpoints:\n- {name: web, ipv4: not-an-ip}\n")
	eps, changed, err = s.refresh()
	if err == nil || changed || eps == nil || eps.Endpoints[0].IPv4.String() != "10.9.0.1" {
		t.Fatalf("bad file: eps=%v changed=%v err=%v; want previous endpoints and an error", eps, changed, err)
	}
}

// allowAlliance lets the alliance reach the deathstar on port 80 without
// HTTP rules: a file that, loaded or not, changes the Plan.
const allowAlliance = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: %s}
spec:
  endpointSelector: {matchLabels: {class: deathstar}}
  ingress:
  - fromEndpoints: [{matchLabels: {org: alliance}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
`

// agentPlan builds the Plan the agent would run from a policy directory:
// its policySource and endpointsSource feed an incremental compiler in the
// order refreshSources uses.
func agentPlan(t *testing.T, dir, endpoints string) (*policy.Plan, []error) {
	t.Helper()
	ps := newPolicySource(dir)
	_, errs := ps.refresh()
	es := endpointsSource{path: endpoints}
	eps, _, err := es.refresh()
	if err != nil {
		t.Fatalf("agent endpoints: %v", err)
	}
	c := policy.NewCompiler(policy.Options{}, policy.NewMemoryAllocator())
	for _, p := range ps.policies() {
		c.UpsertPolicy(p)
	}
	c.SetNode(StandaloneNode(eps.Node, datapath.DefaultEndpointConfig()))
	for _, ns := range eps.Namespaces {
		if err := c.UpsertNamespace(ns); err != nil {
			t.Fatal(err)
		}
	}
	for _, ep := range eps.Endpoints {
		if err := c.UpsertEndpoint(ep); err != nil {
			t.Fatal(err)
		}
	}
	return c.Plan(), errs
}

func planJSON(t *testing.T, p *policy.Plan) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOneLoaderSamePlan: the CLI (StandalonePlan, what `moat policy
// compile|trace` run) and the agent give the same Plan for the same
// directory, including the cases where their old loaders disagreed (the
// agent read hidden files; for a policy defined twice it let the later
// file win where the CLI failed).
func TestOneLoaderSamePlan(t *testing.T) {
	example := filepath.Join("..", "examples", "starwars")
	base, err := os.ReadFile(filepath.Join(example, "policies", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	endpoints := filepath.Join(example, "endpoints.yaml")
	cases := []struct {
		name  string
		extra map[string]string
		// dupFile: the CLI refuses and the agent keeps the earlier
		// definition: both errors name both files, and the agent's Plan
		// equals the CLI's Plan without the duplicate file.
		dupFile string
	}{
		{name: "plain example"},
		{name: "hidden file", extra: map[string]string{".alliance.yaml": fmt.Sprintf(allowAlliance, "alliance")}},
		{name: "editor backup and lock files", extra: map[string]string{".#policy.yaml": fmt.Sprintf(allowAlliance, "lock"), "policy.yaml~": fmt.Sprintf(allowAlliance, "backup")}},
		{name: "hidden directory", extra: map[string]string{"..data/alliance.yaml": fmt.Sprintf(allowAlliance, "alliance")}},
		{name: "same name in a later file", extra: map[string]string{"zz.yaml": fmt.Sprintf(allowAlliance, "deathstar-landing")}, dupFile: "zz.yaml"},
		{name: "same name in an earlier file", extra: map[string]string{"aa.yaml": fmt.Sprintf(allowAlliance, "deathstar-landing")}, dupFile: "policy.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "policy.yaml"), string(base))
			for rel, body := range tc.extra {
				if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, rel), body)
			}
			got, agentErrs := agentPlan(t, dir, endpoints)
			cliPlan, cliErr := StandalonePlan([]string{dir}, endpoints)
			if tc.dupFile == "" {
				if cliErr != nil || len(agentErrs) != 0 {
					t.Fatalf("errors: cli %v, agent %v", cliErr, agentErrs)
				}
				if a, c := planJSON(t, got), planJSON(t, cliPlan); a != c {
					t.Fatalf("agent and CLI Plans differ:\nagent %s\ncli   %s", a, c)
				}
				return
			}
			for what, err := range map[string]error{"cli": cliErr, "agent": errors.Join(agentErrs...)} {
				if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, tc.dupFile)+": doc 1: metadata.name: duplicate CiliumNetworkPolicy default/deathstar-landing") {
					t.Errorf("%s error %v: want the duplicate reported on %s", what, err, tc.dupFile)
				} else if other := strings.Count(err.Error(), dir); other != 2 {
					t.Errorf("%s error %v names %d files, want both", what, err, other)
				}
			}
			// The agent runs the earlier definition: the Plan of the
			// directory without the rejected file.
			if err := os.Remove(filepath.Join(dir, tc.dupFile)); err != nil {
				t.Fatal(err)
			}
			want, err := StandalonePlan([]string{dir}, endpoints)
			if err != nil {
				t.Fatal(err)
			}
			if a, c := planJSON(t, got), planJSON(t, want); a != c {
				t.Fatalf("agent Plan is not the earlier definition's:\nagent %s\nwant  %s", a, c)
			}
		})
	}
}
