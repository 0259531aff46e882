package envoy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// goldenResources is the on-disk form of Resources: each message as
// protojson, under its type's key.
type goldenResources struct {
	Listeners []json.RawMessage `json:"listeners"`
	Clusters  []json.RawMessage `json:"clusters"`
	Routes    []json.RawMessage `json:"routes"`
}

func marshalGolden(t *testing.T, v any) []byte {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal golden: %v", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		t.Fatalf("indent golden: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

func marshalResources(t *testing.T, r *Resources) []byte {
	t.Helper()
	var g goldenResources
	add := func(dst *[]json.RawMessage, m proto.Message) {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %T: %v", m, err)
		}
		*dst = append(*dst, b)
	}
	for _, l := range r.Listeners {
		add(&g.Listeners, l)
	}
	for _, c := range r.Clusters {
		add(&g.Clusters, c)
	}
	for _, rc := range r.Routes {
		add(&g.Routes, rc)
	}
	return marshalGolden(t, g)
}

func unmarshalResources(t *testing.T, b []byte) *Resources {
	t.Helper()
	var g goldenResources
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("parse golden: %v", err)
	}
	r := &Resources{}
	for _, raw := range g.Listeners {
		m := &listenerv3.Listener{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("parse golden listener: %v", err)
		}
		r.Listeners = append(r.Listeners, m)
	}
	for _, raw := range g.Clusters {
		m := &clusterv3.Cluster{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("parse golden cluster: %v", err)
		}
		r.Clusters = append(r.Clusters, m)
	}
	for _, raw := range g.Routes {
		m := &routev3.RouteConfiguration{}
		if err := protojson.Unmarshal(raw, m); err != nil {
			t.Fatalf("parse golden route: %v", err)
		}
		r.Routes = append(r.Routes, m)
	}
	return r
}

// checkGoldenFile compares got with testdata/<dir>/<file> through cmpFn, or
// rewrites the file with -update.
func checkGoldenFile(t *testing.T, dir, file string, got []byte, cmpFn func(want []byte) string) {
	t.Helper()
	path := filepath.Join("testdata", dir, file)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("update golden: %v", err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create it): %v", err)
	}
	if diff := cmpFn(want); diff != "" {
		t.Errorf("%s differs from the golden file (-want +got; rerun with -update if intended):\n%s", path, diff)
	}
}

func checkGoldenResources(t *testing.T, dir string, got *Resources) {
	t.Helper()
	checkGoldenFile(t, dir, "resources.json", marshalResources(t, got), func(want []byte) string {
		return cmp.Diff(unmarshalResources(t, want), got, protocmp.Transform())
	})
}

func checkGoldenJSON(t *testing.T, dir, file string, v any) {
	t.Helper()
	got := marshalGolden(t, v)
	checkGoldenFile(t, dir, file, got, func(want []byte) string {
		var w, g any
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatalf("parse golden %s: %v", file, err)
		}
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("parse %s: %v", file, err)
		}
		return cmp.Diff(w, g)
	})
}
