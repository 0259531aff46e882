package policyload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moatnet/moat/policy"
)

const cnp = `apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: %[1]s}
spec:
  description: "app=%[2]s"
  endpointSelector: {matchLabels: {app: %[2]s}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: client}}]
`

func pol(name, app string) string { return fmt.Sprintf(cnp, name, app) }

func write(t *testing.T, dir, rel, body string) string {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inForce lists "name@app (file)" of the policies in force.
func inForce(pols []policy.Policy) []string {
	var out []string
	for _, p := range pols {
		out = append(out, p.Name+"@"+p.Rules[0].Description+" ("+filepath.Base(p.Source.File)+")")
	}
	return out
}

// TestLoadSemantics holds the cases where the CLI's and the agent's old
// loaders disagreed, and what both do now.
func TestLoadSemantics(t *testing.T) {
	cases := []struct {
		name    string
		files   map[string]string
		want    []string // policies in force (Load and a Loader's first Refresh agree)
		wantErr []string // substrings of the error, all required; none: no error
	}{
		{
			name:  "hidden file ignored",
			files: map[string]string{"a.yaml": pol("a", "web"), ".b.yaml": pol("b", "web")},
			want:  []string{"a@app=web (a.yaml)"},
		},
		{
			name:  "hidden directory ignored (ConfigMap ..data copies)",
			files: map[string]string{"a.yaml": pol("a", "web"), "..2024_01_01/a.yaml": pol("a", "old")},
			want:  []string{"a@app=web (a.yaml)"},
		},
		{
			name: "editor files ignored",
			files: map[string]string{
				"a.yaml": pol("a", "web"), ".#a.yaml": pol("x", "web"), "#a.yaml#": pol("y", "web"),
				"a.yaml~": pol("z", "web"), "b~.yaml~": pol("w", "web"), "#c.yaml": pol("v", "web"),
			},
			want: []string{"a@app=web (a.yaml)"},
		},
		{
			name:    "duplicate across files: the earlier file stays, the error names both",
			files:   map[string]string{"a.yaml": pol("same", "web"), "b.yaml": pol("same", "db") + "---\n" + pol("other", "db")},
			want:    []string{"same@app=web (a.yaml)"},
			wantErr: []string{"b.yaml: doc 1: metadata.name: duplicate CiliumNetworkPolicy default/same", "first defined in ", "a.yaml doc 1"},
		},
		{
			name:    "duplicate in one file rejects the file",
			files:   map[string]string{"a.yaml": pol("same", "web") + "---\n" + pol("same", "db")},
			wantErr: []string{"a.yaml: doc 2: metadata.name: duplicate CiliumNetworkPolicy default/same"},
		},
		{
			name:    "bad file contributes nothing, good files load",
			files:   map[string]string{"a.yaml": pol("a", "web"), "b.yaml": "kind: [\n"},
			want:    []string{"a@app=web (a.yaml)"},
			wantErr: []string{"b.yaml: doc 1: invalid YAML"},
		},
		{
			name:  "subdirectories in lexical order, non-policy extensions skipped",
			files: map[string]string{"z.yml": pol("z", "web"), "sub/m.json": `{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{"name":"m"},"spec":{"description":"","endpointSelector":{}}}`, "README.md": "x"},
			want:  []string{"m@ (m.json)", "z@app=web (z.yml)"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for rel, body := range tc.files {
				write(t, dir, rel, body)
			}
			pols, err := Load(dir)
			if got := inForce(pols); !slices.Equal(got, tc.want) {
				t.Errorf("Load: in force %q, want %q", got, tc.want)
			}
			checkErr(t, "Load", err, tc.wantErr)
			l := New(dir)
			res := l.Refresh()
			if got := inForce(l.Policies()); !slices.Equal(got, tc.want) {
				t.Errorf("Refresh: in force %q, want %q", got, tc.want)
			}
			checkErr(t, "Refresh", res.Err(), tc.wantErr)
			for _, fe := range res.Errors {
				if fe.Previous {
					t.Errorf("first refresh: %s has a previous version", fe.File)
				}
			}
		})
	}
}

func checkErr(t *testing.T, what string, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Errorf("%s: unexpected error %v", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: no error, want %q", what, want)
		return
	}
	var l policy.ErrorList
	if !errors.As(err, &l) {
		t.Errorf("%s: error %T is not a policy.ErrorList", what, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q lacks %q", what, err, w)
		}
	}
}

// TestRefreshKeepsEarlierDefinition: a file added later that redefines a
// policy in force is rejected, whatever its name's sort position, and the
// policy stays with its first file until that file drops it.
func TestRefreshKeepsEarlierDefinition(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "b.yaml", pol("same", "web"))
	l := New(dir)
	if res := l.Refresh(); !res.Changed || len(res.Errors) != 0 {
		t.Fatalf("first refresh %+v", res)
	}
	write(t, dir, "a.yaml", pol("same", "db")+"---\n"+pol("extra", "db"))
	res := l.Refresh()
	if res.Changed || len(res.Errors) != 1 || res.Errors[0].Previous {
		t.Fatalf("after adding a.yaml: %+v", res)
	}
	if e := res.Errors[0].Error(); !strings.Contains(e, "a.yaml: doc 1: metadata.name: duplicate") || !strings.Contains(e, "b.yaml doc 1") {
		t.Fatalf("error %q does not name both files", e)
	}
	if got := inForce(l.Policies()); !slices.Equal(got, []string{"same@app=web (b.yaml)"}) {
		t.Fatalf("in force %q, want b.yaml's definition", got)
	}
	// Unchanged content: the same error again, nothing changes.
	if res := l.Refresh(); res.Changed || len(res.Errors) != 1 {
		t.Fatalf("repeat refresh %+v", res)
	}
	// b.yaml drops the policy: a.yaml's pending version now loads.
	write(t, dir, "b.yaml", pol("bee", "web"))
	res = l.Refresh()
	if !res.Changed || len(res.Errors) != 0 || !slices.Equal(res.ChangedFiles, []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")}) {
		t.Fatalf("after b.yaml let go: %+v", res)
	}
	if got := inForce(l.Policies()); !slices.Equal(got, []string{"same@app=db (a.yaml)", "extra@app=db (a.yaml)", "bee@app=web (b.yaml)"}) {
		t.Fatalf("in force %q", got)
	}
}

// TestRefreshPerFileErrors: a bad edit keeps the previous version (and
// says so), a bad new file has none, fixing and deleting apply, a vanished
// directory keeps everything.
func TestRefreshPerFileErrors(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.yaml", pol("a1", "web"))
	b := write(t, dir, "b.yaml", pol("b1", "web"))
	l := New(dir)
	if res := l.Refresh(); !res.Changed || !slices.Equal(res.ChangedFiles, []string{a, b}) {
		t.Fatalf("first refresh %+v", res)
	}
	if res := l.Refresh(); res.Changed || len(res.Errors) != 0 {
		t.Fatalf("no-op refresh %+v", res)
	}
	// A comment-only edit changes nothing in force.
	write(t, dir, "a.yaml", "# comment\n"+pol("a1", "web"))
	if res := l.Refresh(); res.Changed || len(res.Errors) != 0 {
		t.Fatalf("comment edit %+v", res)
	}
	write(t, dir, "a.yaml", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a2}\nspec: {endpointSelector: {}, bogus: 1}\n")
	c := write(t, dir, "c.yaml", "apiVersion: cilium.io/v2\nkind: Nope\n")
	for i := range 2 {
		res := l.Refresh()
		if res.Changed || len(res.Errors) != 2 {
			t.Fatalf("bad refresh %d: %+v", i, res)
		}
		if e := res.Errors[0]; e.File != a || !e.Previous || !strings.Contains(e.Error(), "a.yaml: doc 1: spec.bogus: unknown field") {
			t.Fatalf("a.yaml error %+v (%v)", e, e)
		}
		if e := res.Errors[1]; e.File != c || e.Previous || !strings.Contains(e.Error(), "c.yaml: doc 1: kind: unsupported apiVersion/kind") {
			t.Fatalf("c.yaml error %+v (%v)", e, e)
		}
	}
	if got := inForce(l.Policies()); !slices.Equal(got, []string{"a1@app=web (a.yaml)", "b1@app=web (b.yaml)"}) {
		t.Fatalf("in force %q", got)
	}
	write(t, dir, "a.yaml", pol("a2", "web"))
	if err := os.Remove(c); err != nil {
		t.Fatal(err)
	}
	if res := l.Refresh(); !res.Changed || len(res.Errors) != 0 || !slices.Equal(res.ChangedFiles, []string{a}) {
		t.Fatalf("fixed refresh %+v", res)
	}
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if res := l.Refresh(); !res.Changed || !slices.Equal(res.ChangedFiles, []string{b}) {
		t.Fatalf("delete refresh %+v", res)
	}
	if got := inForce(l.Policies()); !slices.Equal(got, []string{"a2@app=web (a.yaml)"}) {
		t.Fatalf("in force %q", got)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	res := l.Refresh()
	if res.Changed || len(res.Errors) != 1 || !res.Errors[0].Previous || !strings.Contains(res.Errors[0].Error(), "no such file or directory") {
		t.Fatalf("vanished dir %+v", res)
	}
	if got := inForce(l.Policies()); !slices.Equal(got, []string{"a2@app=web (a.yaml)"}) {
		t.Fatalf("vanished dir dropped policies: %q", got)
	}
}

func TestEndpointsKeepsLastGood(t *testing.T) {
	p := write(t, t.TempDir(), "endpoints.yaml", "endpoints:\n- {name: web, labels: {app: web}, ipv4: 10.9.0.1}\n")
	e := NewEndpoints(p)
	eps, changed, err := e.Refresh()
	if err != nil || !changed || len(eps.Endpoints) != 1 {
		t.Fatalf("first: %v %v %v", eps, changed, err)
	}
	write(t, filepath.Dir(p), "endpoints.yaml", "endpoints:\n- {name: web, ipv4: not-an-ip}\n")
	for i := range 2 { // the error is reported every time, not only on the edit
		eps, changed, err = e.Refresh()
		if err == nil || !strings.Contains(err.Error(), "endpoints.yaml: endpoints[0].ipv4") || changed || !e.HasGood() || eps.Endpoints[0].IPv4.String() != "10.9.0.1" {
			t.Fatalf("bad file, refresh %d: eps=%v changed=%v err=%v; want previous endpoints and the error", i, eps, changed, err)
		}
	}
	if _, err := LoadEndpoints(filepath.Join(filepath.Dir(p), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml: read endpoints file: open: no such file") {
		t.Fatalf("missing file: %v", err)
	}
}
