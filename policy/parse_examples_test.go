package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// exampleDirs lists the folders of ../examples.
func exampleDirs(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("..", "examples", e.Name()))
		}
	}
	if len(dirs) < 6 {
		t.Fatalf("found %d example folders, want at least 6", len(dirs))
	}
	return dirs
}

// TestExamplesParse parses every example's policies and endpoints and
// checks that each policy selects at least one of its endpoints.
func TestExamplesParse(t *testing.T) {
	for _, dir := range exampleDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			eps, err := LoadEndpointsFile(filepath.Join(dir, "endpoints.yaml"))
			if err != nil {
				t.Fatalf("endpoints: %v", err)
			}
			files, err := filepath.Glob(filepath.Join(dir, "policies", "*.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			pols, err := ParseFiles(files...)
			if err != nil {
				t.Fatalf("policies: %v", err)
			}
			if len(pols) == 0 {
				t.Fatal("no policies")
			}
			for _, p := range pols {
				for _, r := range p.Rules {
					selected := 0
					for _, ep := range eps.Endpoints {
						if r.EndpointSelector.Matches(EndpointLabels(ep, eps.NamespaceOf(ep.Namespace))) {
							selected++
						}
					}
					if selected == 0 {
						t.Errorf("%s %s selects no endpoint", p.Ref(), r.Path)
					}
				}
			}
		})
	}
}
