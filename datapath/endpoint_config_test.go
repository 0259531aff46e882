package datapath

import (
	"net/netip"
	"strings"
	"testing"
)

func TestEndpointConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*EndpointConfig)
		wantErr string // substring; empty means valid
	}{
		{name: "defaults", mutate: func(*EndpointConfig) {}},
		{name: "custom prefix", mutate: func(c *EndpointConfig) { c.NetnsPrefix = "test_1." }},
		{name: "prefix with slash", mutate: func(c *EndpointConfig) { c.NetnsPrefix = "a/b" }, wantErr: "netnsPrefix"},
		{name: "prefix with colon", mutate: func(c *EndpointConfig) { c.NetnsPrefix = "a:b" }, wantErr: "netnsPrefix"},
		{name: "prefix too long", mutate: func(c *EndpointConfig) { c.NetnsPrefix = strings.Repeat("p", 33) }, wantErr: "netnsPrefix"},
		{name: "relative netns dir", mutate: func(c *EndpointConfig) { c.NetnsDir = "run/netns" }, wantErr: "netnsDir"},
		{name: "relative host netns", mutate: func(c *EndpointConfig) { c.HostNetns = "netns/host" }, wantErr: "hostNetns"},
		{name: "gateway v4 is v6", mutate: func(c *EndpointConfig) { c.GatewayIPv4 = netip.MustParseAddr("fe80::1") }, wantErr: "gatewayIPv4"},
		{name: "gateway v4 multicast", mutate: func(c *EndpointConfig) { c.GatewayIPv4 = netip.MustParseAddr("224.0.0.1") }, wantErr: "gatewayIPv4"},
		{name: "gateway v4 from pod range", mutate: func(c *EndpointConfig) { c.GatewayIPv4 = netip.MustParseAddr("10.200.0.254") }},
		{name: "gateway v6 global", mutate: func(c *EndpointConfig) { c.GatewayIPv6 = netip.MustParseAddr("fd00::1") }, wantErr: "gatewayIPv6"},
		{name: "main table", mutate: func(c *EndpointConfig) { c.RouteTableProxy = 254 }, wantErr: "routeTableProxy"},
		{name: "negative table", mutate: func(c *EndpointConfig) { c.RouteTableProxy = -1 }, wantErr: "routeTableProxy"},
		{name: "rule after main", mutate: func(c *EndpointConfig) { c.ProxyRulePriority = 32766 }, wantErr: "proxyRulePriority"},
		{name: "mark outside mask", mutate: func(c *EndpointConfig) { c.ProxyMark = 0x1200 }, wantErr: "proxyMark"},
		{name: "zero mask", mutate: func(c *EndpointConfig) { c.ProxyMask = 0 }, wantErr: "proxyMask"},
		{name: "tiny mtu", mutate: func(c *EndpointConfig) { c.MTU = 576 }, wantErr: "mtu"},
		{name: "jumbo mtu", mutate: func(c *EndpointConfig) { c.MTU = 9000 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultEndpointConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Validate() = nil, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestEndpointConfigWithDefaults(t *testing.T) {
	got := EndpointConfig{}.WithDefaults()
	if got != DefaultEndpointConfig() {
		t.Fatalf("zero config with defaults = %+v, want %+v", got, DefaultEndpointConfig())
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	kept := EndpointConfig{NetnsPrefix: "x-", RouteTableProxy: 100, ProxyMark: 0x1, ProxyMask: 0x1}.WithDefaults()
	if kept.NetnsPrefix != "x-" || kept.RouteTableProxy != 100 || kept.ProxyMark != 0x1 || kept.ProxyMask != 0x1 {
		t.Fatalf("WithDefaults overwrote set fields: %+v", kept)
	}
}
