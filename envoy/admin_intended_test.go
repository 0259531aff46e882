package envoy_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/moatnet/moat/envoy"
)

func TestIntendedResourcesRoundTrip(t *testing.T) {
	f := newAdminFixture(t)
	in := &envoy.IntendedResources{Node: "node-a", Version: "v9", Resources: f.intended()}
	data, err := envoy.MarshalIntended(in)
	if err != nil {
		t.Fatal(err)
	}
	again, err := envoy.MarshalIntended(in)
	if err != nil || !bytes.Equal(data, again) {
		t.Errorf("encoding is not stable: %v", err)
	}
	for _, w := range []string{`"version":"v9"`, `"node":"node-a"`, `"` + resource.ListenerType + `":[{"@type":"` + resource.ListenerType + `"`} {
		if !strings.Contains(string(data), w) {
			t.Errorf("wire form lacks %s:\n%s", w, data)
		}
	}
	out, err := envoy.UnmarshalIntended(data)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(in, out, protocmp.Transform()); d != "" {
		t.Errorf("round trip (-in +out):\n%s", d)
	}
	// What came over the wire still compares as synced with a dump of the
	// originals.
	sync, err := envoy.CompareSync(out.Resources, adminViaJSON(t, f.dump("v9").Build()))
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range sync {
		if ts.State != envoy.SyncSynced {
			t.Errorf("%s: %s", envoy.SyncTypeName(ts.TypeURL), ts.Summary())
		}
	}
}

func TestUnmarshalIntendedErrors(t *testing.T) {
	for _, tc := range []struct{ name, data, want string }{
		{"not json", `{`, "decode intended resources"},
		{"type mismatch", `{"version":"1","resources":{"` + resource.ClusterType + `":[{"@type":"` + resource.ListenerType + `","name":"x"}]}}`, "@type is " + resource.ListenerType},
		{"unknown type", `{"version":"1","resources":{"type.googleapis.com/vendor.X":[{"@type":"type.googleapis.com/vendor.X"}]}}`, "vendor.X[0]"},
		{"bad field", `{"version":"1","resources":{"` + resource.ClusterType + `":[{"@type":"` + resource.ClusterType + `","nmae":"x"}]}}`, "nmae"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.UnmarshalIntended([]byte(tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("UnmarshalIntended = %v, want error containing %q", err, tc.want)
			}
		})
	}
}
