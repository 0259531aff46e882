package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseBytes feeds arbitrary documents to the parser and the endpoints
// parser: they must never panic, and a document that parses must parse the
// same way twice. Seeds: every example and invalid test file.
func FuzzParseBytes(f *testing.F) {
	var seeds []string
	for _, pattern := range []string{
		filepath.Join("..", "examples", "*", "*.yaml"),
		filepath.Join("..", "examples", "*", "policies", "*.yaml"),
		filepath.Join("testdata", "invalid", "*.yaml"),
	} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, m...)
	}
	if len(seeds) < 20 {
		f.Fatalf("found %d seed files, want at least 20", len(seeds))
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List}]\n"))
	f.Add([]byte("{\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\", \"spec\": null}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pols, err := ParseBytes("fuzz.yaml", data)
		if err == nil {
			again, err2 := ParseBytes("fuzz.yaml", data)
			if err2 != nil || len(again) != len(pols) {
				t.Fatalf("second parse differs: %d vs %d policies, %v", len(again), len(pols), err2)
			}
		}
		for _, p := range pols {
			for _, r := range p.Rules {
				_ = r.EndpointSelector.String()
			}
		}
		_, _ = ParseEndpoints("fuzz.yaml", data)
	})
}
