package l7proxy

import (
	"net/netip"
	"testing"
)

func TestMatchChain(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	l := &listenerSpec{chains: []*chainSpec{
		{name: "dst-wide", dst: pfx("10.0.0.0/8")},
		{name: "dst-narrow", dst: pfx("10.0.0.10/32")},
		{name: "dst-narrow-src", dst: pfx("10.0.0.10/32"), src: pfx("10.1.0.0/16")},
		{name: "src-only", src: pfx("192.168.0.0/16")},
	}}
	tests := []struct {
		name, src, dst, want string
	}{
		{"most specific destination", "10.9.9.9", "10.0.0.10", "dst-narrow"},
		{"then most specific source", "10.1.2.3", "10.0.0.10", "dst-narrow-src"},
		{"wider destination", "10.9.9.9", "10.0.0.11", "dst-wide"},
		{"destination-less chain by source", "192.168.1.1", "172.16.0.1", "src-only"},
		{"destination match wins over source-only", "192.168.1.1", "10.0.0.11", "dst-wide"},
		{"no match", "172.16.0.2", "172.16.0.1", ""},
		{"v4-mapped addresses", "::ffff:10.9.9.9", "::ffff:10.0.0.10", "dst-narrow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := l.matchChain(netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst))
			got := ""
			if c != nil {
				got = c.name
			}
			if got != tt.want {
				t.Errorf("matchChain(%s, %s) = %q, want %q", tt.src, tt.dst, got, tt.want)
			}
		})
	}
}
