package envoy_test

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
)

// translatedDump returns moat's own translation of a synthetic plan and
// the JSON config dump of an Envoy that applied it.
func translatedDump(tb testing.TB, endpoints, rules int) (*envoy.Resources, []byte) {
	tb.Helper()
	res, err := envoy.Translate(envoy.BenchPlan(endpoints, rules), envoy.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	b := admintest.NewDump().Bootstrap("bench")
	for _, c := range res.Clusters {
		b.Cluster("v1", c)
	}
	for _, l := range res.Listeners {
		b.Listener("v1", l)
	}
	for _, r := range res.Routes {
		b.Route("v1", r)
	}
	raw, err := envoy.MarshalAdminJSON(b.Build())
	if err != nil {
		tb.Fatal(err)
	}
	return res, raw
}

// TestCompareSyncTranslated: everything Translate emits (RBAC maps, nested
// Any values, access logs) survives Envoy's JSON config dump and compares
// equal, and a one-field change in one listener is found.
func TestCompareSyncTranslated(t *testing.T) {
	res, raw := translatedDump(t, 20, 3)
	dump, unknown, err := envoy.ParseConfigDump(raw)
	if err != nil || len(unknown) > 0 {
		t.Fatalf("ParseConfigDump: %v, unknown types %v", err, unknown)
	}
	sync, err := envoy.CompareSync(res.ByType(), dump)
	if err != nil {
		t.Fatal(err)
	}
	for _, ts := range sync {
		if ts.State != envoy.SyncSynced {
			t.Errorf("%s: %s", envoy.SyncTypeName(ts.TypeURL), ts.Summary())
		}
	}
	if d, err := envoy.Diff(res.ByType(), dump); err != nil || d != "" {
		t.Errorf("Diff = %q, %v; want none", d, err)
	}

	changed := res.ByType()
	l := changed[resource.ListenerType][0].(*listenerv3.Listener)
	l = &listenerv3.Listener{Name: l.GetName(), Address: l.GetAddress(), FilterChains: l.GetFilterChains()[1:]}
	changed[resource.ListenerType][0] = l
	sync, err = envoy.CompareSync(changed, dump)
	if err != nil {
		t.Fatal(err)
	}
	if sync[0].State != envoy.SyncStale || len(sync[0].Different) != 1 || sync[0].Different[0] != l.GetName() {
		t.Errorf("after dropping a filter chain: %s", sync[0].Summary())
	}
}

func BenchmarkCompareSync(b *testing.B) {
	res, raw := translatedDump(b, 200, 10)
	dump, _, err := envoy.ParseConfigDump(raw)
	if err != nil {
		b.Fatal(err)
	}
	intended := res.ByType()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envoy.CompareSync(intended, dump); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(raw)), "dump-bytes")
}

func BenchmarkParseConfigDump(b *testing.B) {
	_, raw := translatedDump(b, 200, 10)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := envoy.ParseConfigDump(raw); err != nil {
			b.Fatal(err)
		}
	}
}
