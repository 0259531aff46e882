package envoy_test

import (
	"slices"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
)

// adminViaJSON sends a dump through protojson as the admin interface does.
func adminViaJSON(t *testing.T, d *adminv3.ConfigDump) *adminv3.ConfigDump {
	t.Helper()
	b, err := envoy.MarshalAdminJSON(d)
	if err != nil {
		t.Fatal(err)
	}
	out, unknown, err := envoy.ParseConfigDump(b)
	if err != nil || len(unknown) > 0 {
		t.Fatalf("ParseConfigDump: %v (unknown types %v)", err, unknown)
	}
	return out
}

type adminWantSync struct {
	state                              envoy.SyncState
	missing, different, extra, warming []string
	nacks                              []string // "name@version: details"
}

func TestCompareSync(t *testing.T) {
	f := newAdminFixture(t)
	old := newAdminFixture(t, "/public")
	bad := newAdminFixture(t, "/private")
	const (
		L = resource.ListenerType
		R = resource.RouteType
		C = resource.ClusterType
	)
	extraCluster := &clusterv3.Cluster{Name: "moat/egress/256", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}
	for _, tc := range []struct {
		name string
		dump *admintest.DumpBuilder
		want map[string]adminWantSync
	}{
		{
			name: "synced",
			dump: f.dump("v1"),
			want: map[string]adminWantSync{L: {state: envoy.SyncSynced}, R: {state: envoy.SyncSynced}, C: {state: envoy.SyncSynced}},
		},
		{
			name: "nothing applied yet",
			dump: admintest.NewDump().Bootstrap("node-a"),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncStale, missing: []string{f.listener.GetName()}},
				R: {state: envoy.SyncStale, missing: []string{f.route.GetName()}},
				C: {state: envoy.SyncStale, missing: []string{f.cluster.GetName()}},
			},
		},
		{
			name: "older listener",
			dump: admintest.NewDump().Cluster("v1", f.cluster).Listener("v0", old.listener).Route("v1", f.route),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncStale, different: []string{f.listener.GetName()}},
				R: {state: envoy.SyncSynced}, C: {state: envoy.SyncSynced},
			},
		},
		{
			name: "extra cluster",
			dump: f.dump("v1").Cluster("v0", extraCluster),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncSynced}, R: {state: envoy.SyncSynced},
				C: {state: envoy.SyncStale, extra: []string{"moat/egress/256"}},
			},
		},
		{
			name: "listener warming",
			dump: admintest.NewDump().Cluster("v1", f.cluster).WarmingListener("v1", f.listener).Route("v1", f.route),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncStale, missing: []string{f.listener.GetName()}, warming: []string{f.listener.GetName()}},
				R: {state: envoy.SyncSynced}, C: {state: envoy.SyncSynced},
			},
		},
		{
			name: "listener nacked, old one active",
			dump: admintest.NewDump().Cluster("v2", f.cluster).Listener("v1", old.listener).
				ListenerError("v2", "Error adding/updating listener(s) moat/egress-http/15001: invalid regex", f.listener).Route("v2", f.route),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncNACKed, different: []string{f.listener.GetName()},
					nacks: []string{f.listener.GetName() + "@v2: Error adding/updating listener(s) moat/egress-http/15001: invalid regex"}},
				R: {state: envoy.SyncSynced}, C: {state: envoy.SyncSynced},
			},
		},
		{
			name: "cluster never accepted",
			dump: admintest.NewDump().ClusterError("v1", "cluster: unknown type", f.cluster).Listener("v1", f.listener).Route("v1", f.route),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncSynced}, R: {state: envoy.SyncSynced},
				C: {state: envoy.SyncNACKed, missing: []string{f.cluster.GetName()}, nacks: []string{f.cluster.GetName() + "@v1: cluster: unknown type"}},
			},
		},
		{
			name: "route nacked then fixed",
			dump: f.dump("v3").RouteError("v2", "bad route", bad.route),
			want: map[string]adminWantSync{
				L: {state: envoy.SyncSynced}, C: {state: envoy.SyncSynced},
				R: {state: envoy.SyncSynced, nacks: []string{f.route.GetName() + "@v2: bad route"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envoy.CompareSync(f.intended(), adminViaJSON(t, tc.dump.Build()))
			if err != nil {
				t.Fatal(err)
			}
			var order []string
			for _, ts := range got {
				order = append(order, ts.TypeURL)
				w := tc.want[ts.TypeURL]
				var nacks []string
				for _, n := range ts.NACKs {
					nacks = append(nacks, n.Name+"@"+n.Version+": "+n.Details)
				}
				if ts.State != w.state || !slices.Equal(ts.Missing, w.missing) || !slices.Equal(ts.Different, w.different) ||
					!slices.Equal(ts.Extra, w.extra) || !slices.Equal(ts.Warming, w.warming) || !slices.Equal(nacks, w.nacks) {
					t.Errorf("%s: got %s %+v\nwant %+v", envoy.SyncTypeName(ts.TypeURL), ts.Summary(), ts, w)
				}
			}
			if !slices.Equal(order, []string{L, R, C}) {
				t.Errorf("types in order %v", order)
			}
		})
	}
}

func TestTypeSyncSummary(t *testing.T) {
	for _, tc := range []struct {
		name string
		ts   envoy.TypeSync
		want string
	}{
		{"synced", envoy.TypeSync{State: envoy.SyncSynced, Applied: 3, Versions: []string{"v7"}}, "SYNCED (3, version v7)"},
		{"stale", envoy.TypeSync{State: envoy.SyncStale, Missing: []string{"a", "b"}, Extra: []string{"c"}}, "STALE: missing a, b; not intended c"},
		{"nacked", envoy.TypeSync{State: envoy.SyncNACKed, Different: []string{"x"}, NACKs: []envoy.ResourceNACK{{Name: "x", Version: "v8", Details: "bad"}}},
			`NACKED: rejected x at version "v8": bad; different x`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.ts.Summary(); got != tc.want {
				t.Errorf("Summary = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDiff(t *testing.T) {
	f := newAdminFixture(t)
	old := newAdminFixture(t, "/public", "/admin")
	extra := &clusterv3.Cluster{Name: "moat/egress/256"}
	for _, tc := range []struct {
		name string
		dump *admintest.DumpBuilder
		want []string // substrings, in order
	}{
		{name: "in sync", dump: f.dump("v1")},
		{
			name: "differs, missing, extra, rejected",
			dump: admintest.NewDump().Cluster("v1", f.cluster).Cluster("v0", extra).Listener("v0", old.listener).
				ListenerError("v1", "invalid regex", f.listener),
			want: []string{
				`listener "moat/egress-http/15001": rejected at version "v1": invalid regex`,
				`listener "moat/egress-http/15001": differs (-intended +applied, version "v0")`,
				`allow /admin`,
				`route "moat/egress-http/15001/0": missing from Envoy`,
				`cluster "moat/egress/256": active in Envoy (version "v0") but not intended`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := envoy.Diff(f.intended(), adminViaJSON(t, tc.dump.Build()))
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.want) == 0 && got != "" {
				t.Fatalf("Diff = %q, want none", got)
			}
			rest := got
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("Diff does not contain %q (in order); got:\n%s", w, got)
				}
				rest = rest[i+len(w):]
			}
			for line := range strings.Lines(got) {
				if strings.Contains(line, "allow /admin") && !strings.HasPrefix(strings.TrimSpace(line), "+") {
					t.Errorf("the applied-only policy is not marked +: %q", line)
				}
			}
		})
	}
}
