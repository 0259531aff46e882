package datapath

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/moatnet/moat/policy"
)

var update = flag.Bool("update", false, "rewrite golden files")

func samplePlan() *policy.Plan {
	return &policy.Plan{
		Endpoints: []policy.EndpointPlan{
			{
				Namespace: "default", Name: "web", Identity: 300,
				Addresses: []netip.Addr{netip.MustParseAddr("10.0.1.5"), netip.MustParseAddr("fd00::5")},
				Ingress: policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Identity: 301, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 80, To: 80}}, Verdict: policy.VerdictRedirect, L7: policy.L7HTTP},
					{L4Key: policy.L4Key{Identity: 301, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 8000, To: 8010}}, Verdict: policy.VerdictAllow},
					{L4Key: policy.L4Key{Identity: policy.IDWorld, Proto: policy.ProtoAny}, Verdict: policy.VerdictDeny},
				}},
				Egress: policy.DirectionPlan{Enforced: true, Entries: []policy.Entry{
					{L4Key: policy.L4Key{Proto: policy.ProtoUDP, Ports: policy.PortRange{From: 53, To: 53}}, Verdict: policy.VerdictRedirect, L7: policy.L7DNS},
					{L4Key: policy.L4Key{Identity: policy.IDLocalFlag | 1, Proto: policy.ProtoTCP, Ports: policy.PortRange{From: 443, To: 443}}, Verdict: policy.VerdictAllow},
					{L4Key: policy.L4Key{Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 8, To: 8}}, Verdict: policy.VerdictAllow},
					// Type 0 (echo reply) is one type, not every type.
					{L4Key: policy.L4Key{Proto: policy.ProtoICMP, Ports: policy.PortRange{From: 0, To: 0}}, Verdict: policy.VerdictAllow},
				}},
			},
			{Namespace: "default", Name: "unattached", Identity: 302},
		},
		IPCache: []policy.IPCacheEntry{
			{Prefix: netip.MustParsePrefix("10.0.1.6/32"), Identity: 301},
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Identity: policy.IDLocalFlag | 1},
		},
	}
}

func TestDesiredStateGolden(t *testing.T) {
	cases := []struct {
		name    string
		plan    *policy.Plan
		ifaces  map[EndpointKey]int
		proxies ProxyPorts
	}{
		{
			name:    "sample",
			plan:    samplePlan(),
			ifaces:  map[EndpointKey]int{{Namespace: "default", Name: "web"}: 12},
			proxies: ProxyPorts{{Direction: policy.Ingress, L7: policy.L7HTTP}: 15001},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := DesiredState(tc.plan, tc.ifaces, tc.proxies)
			if err != nil {
				t.Fatal(err)
			}
			got := st.Format()
			path := filepath.Join("testdata", tc.name, "entries.golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("entries differ from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

func TestDesiredStateErrors(t *testing.T) {
	overlap := samplePlan()
	overlap.Endpoints[0].Egress.Entries = append(overlap.Endpoints[0].Egress.Entries,
		policy.Entry{L4Key: policy.L4Key{Proto: policy.ProtoUDP, Ports: policy.PortRange{From: 52, To: 53}}, Verdict: policy.VerdictAllow})
	sharedAddr := samplePlan()
	sharedAddr.Endpoints[1].Addresses = []netip.Addr{netip.MustParseAddr("10.0.1.5")}
	cases := []struct {
		name   string
		plan   *policy.Plan
		ifaces map[EndpointKey]int
	}{
		{"overlapping entries", overlap, map[EndpointKey]int{{Namespace: "default", Name: "web"}: 12}},
		{"shared ifindex", samplePlan(), map[EndpointKey]int{{Namespace: "default", Name: "web"}: 12, {Namespace: "default", Name: "unattached"}: 12}},
		{"bad ifindex", samplePlan(), map[EndpointKey]int{{Namespace: "default", Name: "web"}: 0}},
		{"shared address", sharedAddr, map[EndpointKey]int{{Namespace: "default", Name: "web"}: 12, {Namespace: "default", Name: "unattached"}: 13}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DesiredState(tc.plan, tc.ifaces, nil); err == nil {
				t.Fatal("want an error")
			}
		})
	}
}
