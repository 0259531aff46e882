package datapath

import (
	"net/netip"
	"testing"
	"time"
)

// UplinkRoutes says yes only for a destination whose route leaves through
// an interface with from_uplink, reuses an answer for uplinkRouteTTL, and
// looks the route up again after it.
func TestUplinkRoutesReaches(t *testing.T) {
	d := &Datapath{tcFilter: map[linkKey]bool{{5, hookUplink}: true, {7, hookIngress}: true, {7, hookEgress}: true}}
	routes := map[netip.Addr]int{
		netip.MustParseAddr("192.0.2.77"):   5, // through the uplink
		netip.MustParseAddr("10.218.0.10"):  7, // an endpoint's veth
		netip.MustParseAddr("2001:db8::77"): 5,
	}
	lookups := 0
	now := time.Unix(1000, 0)
	u := &UplinkRoutes{d: d, now: func() time.Time { return now }, cache: map[netip.Addr]uplinkAnswer{},
		route: func(a netip.Addr) (int, bool) {
			lookups++
			idx, ok := routes[a]
			return idx, ok
		}}
	for _, tt := range []struct {
		dst  string
		want bool
	}{
		{"192.0.2.77", true},
		{"::ffff:192.0.2.77", true},
		{"2001:db8::77", true},
		{"10.218.0.10", false},
		{"198.51.100.1", false}, // no route
	} {
		if got := u.Reaches(netip.MustParseAddr(tt.dst)); got != tt.want {
			t.Errorf("Reaches(%s) = %v, want %v", tt.dst, got, tt.want)
		}
	}
	if lookups != 4 {
		t.Errorf("%d route lookups, want 4 (the mapped address reuses the IPv4 answer)", lookups)
	}
	// The route moves off the uplink: the cached answer holds until the TTL.
	routes[netip.MustParseAddr("192.0.2.77")] = 9
	if !u.Reaches(netip.MustParseAddr("192.0.2.77")) {
		t.Error("cached answer not reused within the TTL")
	}
	now = now.Add(uplinkRouteTTL)
	if u.Reaches(netip.MustParseAddr("192.0.2.77")) {
		t.Error("answer after the TTL still says the uplink; want a fresh lookup")
	}
	if u.Reaches(netip.Addr{}) {
		t.Error("Reaches(zero address) = true")
	}
}
