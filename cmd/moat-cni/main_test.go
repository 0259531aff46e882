package main

import (
	"os"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/moatnet/moat/agent"
)

// TestExampleConflists: the README's examples parse as the runtime parses
// them, the standalone one is exactly what the agent installs, and the
// chained one puts moat-cni after the plugin that makes the veth.
func TestExampleConflists(t *testing.T) {
	data, err := os.ReadFile("testdata/05-moat.conflist")
	if err != nil {
		t.Fatal(err)
	}
	want, err := agent.CNIConflist(agent.DefaultRunDir)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(want) {
		t.Errorf("testdata/05-moat.conflist differs from what the agent installs:\n%s\nwant:\n%s", data, want)
	}
	for _, tc := range []struct {
		file  string
		types []string
	}{
		{"testdata/05-moat.conflist", []string{"moat-cni"}},
		{"testdata/10-ptp-moat.conflist", []string{"ptp", "moat-cni"}},
	} {
		list, err := libcni.ConfListFromFile(tc.file)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if list.CNIVersion != "1.1.0" || len(list.Plugins) != len(tc.types) {
			t.Fatalf("%s: version %s, %d plugins", tc.file, list.CNIVersion, len(list.Plugins))
		}
		for i, ty := range tc.types {
			if list.Plugins[i].Network.Type != ty {
				t.Errorf("%s: plugin %d is %s, want %s", tc.file, i, list.Plugins[i].Network.Type, ty)
			}
		}
	}
}
