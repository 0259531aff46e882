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
	{"dashboards", []string{"policy", "datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "dashboards name metrics; their external tests tie the names to the real registries", true},
	{"policyload", []string{"datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd"}, "the loader reads files for policy and hands policies on", false},
	{"cni", []string{"policy", "datapath", "envoy", "xds", "l7proxy", "dnsproxy", "flow", "k8s", "agent", "cmd", "policyload"}, "moat-cni is a thin client of the agent's API: it never acts on its own", false},
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

// listPackages returns every package of the module, with its imports.
func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bufio.NewReader(bytes.NewReader(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 2 {
		t.Fatalf("go list returned %d packages; expected the whole module", len(pkgs))
	}
	return pkgs
}

func TestImportDirection(t *testing.T) {
	for _, p := range listPackages(t) {
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

// thirdParty lists, per folder, the only modules outside the standard
// library and this module that its packages (and their tests) may import:
// the "may import" column of the layering table in ARCHITECTURE.md. The
// longest matching folder wins; a folder missing here may import nothing
// third-party. nil means unrestricted (the wiring layers).
var thirdParty = map[string][]string{
	"api":                  {"k8s.io/apimachinery"},
	"policy":               {"sigs.k8s.io/yaml", "sigs.k8s.io/json", "k8s.io/apimachinery/pkg/util/yaml"}, // the YAML stream reader kubectl uses; api/ brings apimachinery already
	"policyload":           {},
	"datapath":             {"github.com/cilium/ebpf", "github.com/vishvananda/netlink", "github.com/vishvananda/netns", "golang.org/x/sys", "github.com/google/go-cmp"},
	"envoy":                {"github.com/envoyproxy/go-control-plane", "google.golang.org/protobuf", "github.com/prometheus/client_golang", "sigs.k8s.io/yaml", "github.com/google/go-cmp"},
	"xds":                  {"github.com/envoyproxy/go-control-plane", "github.com/prometheus/client_golang", "google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto", "golang.org/x/sync"},
	"l7proxy":              {"github.com/envoyproxy/go-control-plane", "google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto", "github.com/prometheus/client_golang", "golang.org/x/net", "golang.org/x/sync", "golang.org/x/sys"},
	"dnsproxy":             {"github.com/miekg/dns", "golang.org/x/sys", "github.com/prometheus/client_golang"},
	"flow":                 {"github.com/prometheus/client_golang", "google.golang.org/grpc", "github.com/envoyproxy/go-control-plane", "google.golang.org/protobuf", "github.com/google/go-cmp"},
	"k8s":                  {"k8s.io/client-go", "k8s.io/apimachinery", "k8s.io/api", "github.com/prometheus/client_golang"}, // moat_identity_* and moat_operator_* metrics
	"internal/testutil":    {},
	"cni":                  {"github.com/containernetworking/cni"},
	"internal/httpnorm":    {},
	"internal/netns":       {"golang.org/x/sys"},
	"internal/adsclient":   {"github.com/envoyproxy/go-control-plane", "google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto"},
	"internal/metricslint": {"github.com/prometheus/client_golang", "github.com/prometheus/client_model"},
	"internal/cmd":         {},
	"internal/archtest":    {},
	"internal/k8stest":     {"k8s.io/client-go", "k8s.io/apimachinery", "k8s.io/api"},
	"charts":               {"k8s.io/client-go", "k8s.io/apimachinery", "sigs.k8s.io/yaml"},
	"dashboards":           {"github.com/grafana/grafana-foundation-sdk/go", "github.com/prometheus/client_golang", "k8s.io/client-go"}, // the SDK; the tests build the real registries
	"agent":                nil,
	"cmd":                  nil,
	"e2e":                  nil,
}

// allowedThirdParty returns the allowed modules of a package and whether
// it is unrestricted.
func allowedThirdParty(importPath string) (allowed []string, unrestricted bool) {
	best := ""
	for dir := range thirdParty {
		if under(importPath, dir) && len(dir) > len(best) {
			best = dir
		}
	}
	if best == "" {
		return nil, false
	}
	l := thirdParty[best]
	return l, l == nil
}

// isThirdParty reports whether imp is outside the standard library and the
// module (a standard library path has no dot in its first element).
func isThirdParty(imp string) bool {
	if imp == module || strings.HasPrefix(imp, module+"/") {
		return false
	}
	first, _, _ := strings.Cut(imp, "/")
	return strings.Contains(first, ".")
}

// thirdPartyViolations lists the forbidden third-party imports of p.
func thirdPartyViolations(p pkg) []string {
	allowed, unrestricted := allowedThirdParty(p.ImportPath)
	if unrestricted {
		return nil
	}
	var bad []string
	for _, imp := range append(append(append([]string(nil), p.Imports...), p.TestImports...), p.XTestImports...) {
		if !isThirdParty(imp) {
			continue
		}
		ok := false
		for _, a := range allowed {
			if imp == a || strings.HasPrefix(imp, a+"/") {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, imp)
		}
	}
	return bad
}

func TestThirdPartyImports(t *testing.T) {
	for _, p := range listPackages(t) {
		for _, imp := range thirdPartyViolations(p) {
			t.Errorf("%s imports %s: not in its folder's allowed third-party modules (internal/archtest, ARCHITECTURE.md layering table)", p.ImportPath, imp)
		}
	}
}

func TestThirdPartyRulesCatchViolations(t *testing.T) {
	cases := []struct {
		pkg  pkg
		want int
	}{
		{pkg{ImportPath: module + "/policy", Imports: []string{"os", "sigs.k8s.io/yaml", module + "/api/v1alpha1"}}, 0},
		{pkg{ImportPath: module + "/policy", Imports: []string{"github.com/cilium/ebpf"}}, 1},
		{pkg{ImportPath: module + "/policy/fqdn", TestImports: []string{"github.com/miekg/dns"}}, 1},
		{pkg{ImportPath: module + "/internal/testutil", Imports: []string{"golang.org/x/sys/unix"}}, 1},
		{pkg{ImportPath: module + "/xds", XTestImports: []string{"k8s.io/client-go/kubernetes"}}, 1},
		{pkg{ImportPath: module + "/newfolder", Imports: []string{"github.com/x/y"}}, 1},
		{pkg{ImportPath: module + "/agent", Imports: []string{"github.com/x/y"}}, 0},
	}
	for _, tc := range cases {
		if got := thirdPartyViolations(tc.pkg); len(got) != tc.want {
			t.Errorf("%s: violations %v, want %d", tc.pkg.ImportPath, got, tc.want)
		}
	}
}
