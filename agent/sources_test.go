package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
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
