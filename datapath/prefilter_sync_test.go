package datapath

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestPlanDenyList(t *testing.T) {
	tests := []struct {
		name    string
		current map[netip.Prefix]uint32
		desired []netip.Prefix
		wantAdd map[netip.Prefix]uint32
		wantDel []netip.Prefix
	}{
		{
			name:    "empty",
			wantAdd: map[netip.Prefix]uint32{},
		},
		{
			name:    "fresh",
			desired: []netip.Prefix{pfx("10.0.0.0/8"), pfx("2001:db8::/32")},
			wantAdd: map[netip.Prefix]uint32{pfx("10.0.0.0/8"): 1, pfx("2001:db8::/32"): 2},
		},
		{
			name:    "normalizes-and-dedupes",
			desired: []netip.Prefix{pfx("10.1.2.3/8"), pfx("10.0.0.0/8"), pfx("::ffff:192.0.2.0/120")},
			wantAdd: map[netip.Prefix]uint32{pfx("10.0.0.0/8"): 1, pfx("192.0.2.0/24"): 2},
		},
		{
			name:    "unchanged",
			current: map[netip.Prefix]uint32{pfx("10.0.0.0/8"): 7},
			desired: []netip.Prefix{pfx("10.0.0.0/8")},
			wantAdd: map[netip.Prefix]uint32{},
		},
		{
			name:    "replace-never-reuses-a-removed-slot",
			current: map[netip.Prefix]uint32{pfx("10.0.0.0/8"): 1, pfx("192.0.2.0/24"): 3},
			desired: []netip.Prefix{pfx("192.0.2.0/24"), pfx("198.51.100.0/24"), pfx("203.0.113.0/24")},
			wantAdd: map[netip.Prefix]uint32{pfx("198.51.100.0/24"): 2, pfx("203.0.113.0/24"): 4},
			wantDel: []netip.Prefix{pfx("10.0.0.0/8")},
		},
		{
			name:    "clear",
			current: map[netip.Prefix]uint32{pfx("10.0.0.0/8"): 1, pfx("fd00::/8"): 2},
			wantAdd: map[netip.Prefix]uint32{},
			wantDel: []netip.Prefix{pfx("10.0.0.0/8"), pfx("fd00::/8")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := planDenyList(tt.current, tt.desired)
			if err != nil {
				t.Fatal(err)
			}
			cmpPrefix := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
			if diff := cmp.Diff(tt.wantAdd, got.add, cmpPrefix); diff != "" {
				t.Errorf("add (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDel, got.del, cmpPrefix, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("del (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("invalid", func(t *testing.T) {
		if _, err := planDenyList(nil, []netip.Prefix{{}}); err == nil {
			t.Error("planned an invalid prefix")
		}
	})
}

func TestPrefilterKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"0.0.0.0/0", "10.0.0.0/8", "192.0.2.1/32", "::/0", "2001:db8::/32", "fd00::1/128"} {
		t.Run(s, func(t *testing.T) {
			p := pfx(s)
			k := prefilterKeyOf(p)
			wantBits := p.Bits()
			if p.Addr().Is4() {
				wantBits += 96
			}
			if int(k.Prefixlen) != wantBits {
				t.Errorf("prefixlen %d, want %d", k.Prefixlen, wantBits)
			}
			got, err := prefilterPrefixOf(k)
			if err != nil || got != p {
				t.Errorf("round trip: %v, %v; want %v", got, err, p)
			}
		})
	}
}

func TestXDPPinName(t *testing.T) {
	tests := []struct {
		name    string
		ok      bool
		ifindex int
	}{
		{xdpPinName(12), true, 12},
		{"0-xdp", false, 0},
		{"12-tc-ingress", false, 0},
		{sockopsPinName(5), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, ok := parseXDPPinName(tt.name)
			if ok != tt.ok || n != tt.ifindex {
				t.Errorf("parse = %d, %v; want %d, %v", n, ok, tt.ifindex, tt.ok)
			}
			if _, tc := parsePinName(tt.name); tc && ok {
				t.Error("an xdp pin parses as a tc pin")
			}
		})
	}
}
