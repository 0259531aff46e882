package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/moatnet/moat"

// rule forbids packages under From from importing packages under any of To
// (paths relative to the module, "" never used).
type rule struct {
	from   string
	to     []string
	reason string
	// xtestOK lets external tests (package x_test) import the forbidden
	// packages: they drive the real counterpart, e.g. l7proxy's tests run
	// against a real xds server serving envoy translations.
	xtestOK bool
}

var rules = []rule{
	{"policy", []string{"datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "policy is pure: the other layers consume it", false},
	{"api", []string{"policy", "datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "api holds CRD types only", false},
	{"xds", []string{"policy", "datapath", "envoy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "xds serves resources and never knows policies", false},
	{"envoy", []string{"datapath", "xds", "dnsproxy", "l7proxy", "k8s", "agent", "cmd"}, "envoy translation is pure", false},
	{"datapath", []string{"dnsproxy", "envoy", "xds", "l7proxy", "flow", "k8s", "agent", "cmd"}, "the agent connects datapath and the proxies through interfaces", false},
	{"dnsproxy", []string{"datapath", "envoy", "xds", "l7proxy", "k8s", "agent", "cmd"}, "dnsproxy and datapath never import each other", false},
	{"flow", []string{"datapath", "envoy", "xds", "l7proxy", "dnsproxy", "k8s", "agent", "cmd"}, "flow consumes records, not components", false},
	{"l7proxy", []string{"policy", "datapath", "envoy", "xds", "dnsproxy", "k8s", "agent", "cmd"}, "l7proxy runs Envoy config, not policies", true},
	{"k8s", []string{"datapath", "envoy", "xds", "l7proxy", "dnsproxy", "agent", "cmd"}, "informers feed the agent", false},
	{"agent", []string{"cmd"}, "main packages are leaves", false},
	{"internal/testutil", []string{"policy", "datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "test helpers stay generic", false},
}

type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

func under(path, dir string) bool {
	full := module + "/" + dir
	return path == full || strings.HasPrefix(path, full+"/")
}

func TestImportDirection(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(out)))
	seen := 0
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		for _, r := range rules {
			if !under(p.ImportPath, r.from) {
				continue
			}
			imports := append(append([]string(nil), p.Imports...), p.TestImports...)
			if !r.xtestOK {
				imports = append(imports, p.XTestImports...)
			}
			for _, imp := range imports {
				for _, forbidden := range r.to {
					if under(imp, forbidden) {
						t.Errorf("%s imports %s: %s", p.ImportPath, imp, r.reason)
					}
				}
			}
		}
	}
	if seen < 2 {
		t.Fatalf("go list returned %d packages; expected the whole module", seen)
	}
}

func TestRulesCatchAViolation(t *testing.T) {
	// Guard against a rule table that can never fire: a made-up package
	// path under xds importing policy must be caught by the same check.
	violations := 0
	for _, r := range rules {
		if !under(module+"/xds/sub", r.from) {
			continue
		}
		for _, forbidden := range r.to {
			if under(module+"/policy", forbidden) {
				violations++
			}
		}
	}
	if violations != 1 {
		t.Fatalf("xds/sub importing policy matched %d rules, want 1", violations)
	}
}
