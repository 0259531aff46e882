package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// exampleInput parses one folder of examples/ into a compiler Input.
func exampleInput(t *testing.T, name string) Input {
	t.Helper()
	dir := filepath.Join("..", "examples", name)
	pols, err := ParseFiles(filepath.Join(dir, "policies"))
	if err != nil {
		t.Fatal(err)
	}
	ef, err := LoadEndpointsFile(filepath.Join(dir, "endpoints.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return Input{Policies: pols, Endpoints: ef.Endpoints, Namespaces: ef.Namespaces, Node: ef.Node}
}

func TestCompileExamples(t *testing.T) {
	t.Parallel()
	ents, err := os.ReadDir(filepath.Join("..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			t.Parallel()
			in := exampleInput(t, e.Name())
			p, err := Compile(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Endpoints) == 0 {
				t.Fatal("no endpoints compiled")
			}
			checkContract(t, p)
			checkAgainstReference(t, in, p)
		})
	}
	if n == 0 {
		t.Fatal("no examples found")
	}
}

func TestTraceStarWarsExample(t *testing.T) {
	t.Parallel()
	p, err := Compile(exampleInput(t, "starwars"))
	if err != nil {
		t.Fatal(err)
	}
	ep := func(name string) TracePeer { return TracePeer{Namespace: "default", Name: name} }
	tests := []struct {
		name   string
		from   string
		method string
		path   string
		want   string
		status int
	}{
		{"tiefighter requests landing", "tiefighter", "POST", "/v1/request-landing", TraceAllowed, 0},
		{"tiefighter exhaust port", "tiefighter", "PUT", "/v1/exhaust-port", TraceDenied, 403},
		{"xwing requests landing", "xwing", "POST", "/v1/request-landing", TraceDenied, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := Trace(p, TraceRequest{From: ep(tt.from), To: ep("deathstar"), Proto: ProtoTCP, Port: 80,
				HTTP: &TraceHTTP{Method: tt.method, Path: tt.path, Host: "deathstar"}})
			if res.Verdict != tt.want {
				t.Fatalf("verdict %s, want %s\n%s", res.Verdict, tt.want, res)
			}
			last := res.Steps[len(res.Steps)-1]
			if tt.status != 0 && (last.HTTP == nil || last.HTTP.Status != tt.status || last.HTTP.Body != "Access denied") {
				t.Errorf("http decision %+v, want %d Access denied", last.HTTP, tt.status)
			}
		})
	}
}
