package agent

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/moatnet/moat/k8s"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestComputeNodeRoutes(t *testing.T) {
	n := func(name string, addrs []string, cidrs ...string) k8s.NodeInfo {
		ni := k8s.NodeInfo{Name: name}
		for _, a := range addrs {
			ni.Addresses = append(ni.Addresses, ip(a))
		}
		for _, c := range cidrs {
			ni.PodCIDRs = append(ni.PodCIDRs, pfx(c))
		}
		return ni
	}
	for _, tc := range []struct {
		name     string
		nodes    []k8s.NodeInfo
		want     []NodeRoute
		problems []string
	}{
		{"alone", []k8s.NodeInfo{n("a", []string{"192.168.0.1"}, "10.244.0.0/24")}, nil, nil},
		{
			"three nodes, sorted by destination",
			[]k8s.NodeInfo{
				n("c", []string{"192.168.0.3"}, "10.244.2.0/24"),
				n("a", []string{"192.168.0.1"}, "10.244.0.0/24"),
				n("b", []string{"192.168.0.2"}, "10.244.1.0/24"),
			},
			[]NodeRoute{{pfx("10.244.1.0/24"), ip("192.168.0.2"), "b"}, {pfx("10.244.2.0/24"), ip("192.168.0.3"), "c"}},
			nil,
		},
		{
			"dual stack picks the address of the CIDR's family",
			[]k8s.NodeInfo{
				n("a", []string{"192.168.0.1"}, "10.244.0.0/24"),
				n("b", []string{"fd00::2", "192.168.0.2"}, "10.244.1.0/24", "fd10:1::/64"),
			},
			[]NodeRoute{{pfx("10.244.1.0/24"), ip("192.168.0.2"), "b"}, {pfx("fd10:1::/64"), ip("fd00::2"), "b"}},
			nil,
		},
		{
			"no address, overlap with ours, duplicate CIDR, unmasked CIDR",
			[]k8s.NodeInfo{
				n("a", []string{"192.168.0.1"}, "10.244.0.0/24"),
				n("b", nil, "10.244.1.0/24"),
				n("c", []string{"192.168.0.3"}, "10.244.0.0/16"),
				n("d", []string{"192.168.0.4"}, "10.245.0.7/24"),
				n("e", []string{"192.168.0.5"}, "10.245.0.0/24"),
			},
			[]NodeRoute{{pfx("10.245.0.0/24"), ip("192.168.0.4"), "d"}},
			[]string{"node b: no InternalIP", "node c: pod CIDR 10.244.0.0/16 overlaps", "node e: pod CIDR 10.245.0.0/24 is node d's too"},
		},
		{"self missing: routes to everyone", []k8s.NodeInfo{n("b", []string{"192.168.0.2"}, "10.244.1.0/24")},
			[]NodeRoute{{pfx("10.244.1.0/24"), ip("192.168.0.2"), "b"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := ComputeNodeRoutes("a", tc.nodes)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("routes:\n got %v\nwant %v", got, tc.want)
			}
			if len(problems) != len(tc.problems) {
				t.Fatalf("problems %q, want %d like %q", problems, len(tc.problems), tc.problems)
			}
			for i, p := range tc.problems {
				if !strings.Contains(problems[i], p) {
					t.Errorf("problem %d %q does not say %q", i, problems[i], p)
				}
			}
		})
	}
}
