package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/moatnet/moat/policy"
)

// EndpointConfig configures the standalone endpoint manager. The zero value
// of every field means its default (see DefaultEndpointConfig).
type EndpointConfig struct {
	// NetnsPrefix starts the name of every netns the manager creates
	// (default "moat-"). It also tags the host veths the manager owns, so two
	// managers with different prefixes never touch each other's endpoints.
	NetnsPrefix string `json:"netnsPrefix,omitempty"`
	// NetnsDir is where named netns are bind-mounted (default /var/run/netns,
	// where `ip netns` finds them).
	NetnsDir string `json:"netnsDir,omitempty"`
	// HostNetns is the path of the netns that holds the host-side veths,
	// host routes and proxy routing (default: the process's own netns).
	// Tests point it at a scratch netns.
	HostNetns string `json:"hostNetns,omitempty"`
	// GatewayIPv4 is the pods' IPv4 next hop, configured as a scope-link /32
	// on every host veth (default 169.254.42.1).
	GatewayIPv4 netip.Addr `json:"gatewayIPv4,omitzero"`
	// GatewayIPv6 is the pods' IPv6 next hop, a link-local address configured
	// on every host veth (default fe80::42:1).
	GatewayIPv6 netip.Addr `json:"gatewayIPv6,omitzero"`
	// RouteTableProxy is the routing table that delivers to-proxy packets
	// locally (default 2004).
	RouteTableProxy int `json:"routeTableProxy,omitempty"`
	// ProxyRulePriority is the priority of the fwmark rule (default 9: after
	// the local table, before main).
	ProxyRulePriority int `json:"proxyRulePriority,omitempty"`
	// ProxyMark and ProxyMask select to-proxy packets (default
	// policy.MarkToProxy/policy.MarkMagicMask, 0x200/0xf00).
	ProxyMark uint32 `json:"proxyMark,omitempty"`
	ProxyMask uint32 `json:"proxyMask,omitempty"`
	// MTU of both veth ends; 0 keeps the kernel default (1500).
	MTU int `json:"mtu,omitempty"`
}

// DefaultEndpointConfig returns the defaults that zero fields take.
func DefaultEndpointConfig() EndpointConfig {
	return EndpointConfig{
		NetnsPrefix:       "moat-",
		NetnsDir:          "/var/run/netns",
		GatewayIPv4:       netip.MustParseAddr("169.254.42.1"),
		GatewayIPv6:       netip.MustParseAddr("fe80::42:1"),
		RouteTableProxy:   2004,
		ProxyRulePriority: 9,
		ProxyMark:         policy.MarkToProxy,
		ProxyMask:         policy.MarkMagicMask,
	}
}

// WithDefaults returns c with every zero field set to its default.
func (c EndpointConfig) WithDefaults() EndpointConfig {
	d := DefaultEndpointConfig()
	if c.NetnsPrefix == "" {
		c.NetnsPrefix = d.NetnsPrefix
	}
	if c.NetnsDir == "" {
		c.NetnsDir = d.NetnsDir
	}
	if !c.GatewayIPv4.IsValid() {
		c.GatewayIPv4 = d.GatewayIPv4
	}
	if !c.GatewayIPv6.IsValid() {
		c.GatewayIPv6 = d.GatewayIPv6
	}
	if c.RouteTableProxy == 0 {
		c.RouteTableProxy = d.RouteTableProxy
	}
	if c.ProxyRulePriority == 0 {
		c.ProxyRulePriority = d.ProxyRulePriority
	}
	if c.ProxyMark == 0 && c.ProxyMask == 0 {
		c.ProxyMark, c.ProxyMask = d.ProxyMark, d.ProxyMask
	}
	return c
}

// Validate reports every problem of a config whose defaults were applied.
func (c EndpointConfig) Validate() error {
	var errs []error
	if c.NetnsPrefix == "" || len(c.NetnsPrefix) > 32 || !epCleanName(c.NetnsPrefix) {
		errs = append(errs, fmt.Errorf("netnsPrefix %q: want 1-32 characters of [A-Za-z0-9._-]", c.NetnsPrefix))
	}
	if !filepath.IsAbs(c.NetnsDir) {
		errs = append(errs, fmt.Errorf("netnsDir %q: want an absolute path", c.NetnsDir))
	}
	if c.HostNetns != "" && !filepath.IsAbs(c.HostNetns) {
		errs = append(errs, fmt.Errorf("hostNetns %q: want an absolute path", c.HostNetns))
	}
	if g := c.GatewayIPv4; !g.Is4() || g.IsUnspecified() || g.IsMulticast() || g.IsLoopback() || g == netip.IPv4Unspecified() {
		errs = append(errs, fmt.Errorf("gatewayIPv4 %v: want a unicast IPv4 address", g))
	}
	if g := c.GatewayIPv6; !g.Is6() || g.Is4In6() || !g.IsLinkLocalUnicast() {
		errs = append(errs, fmt.Errorf("gatewayIPv6 %v: want a link-local unicast IPv6 address (fe80::/10)", g))
	}
	switch t := c.RouteTableProxy; {
	case t <= 0 || t > 0xffffffff:
		errs = append(errs, fmt.Errorf("routeTableProxy %d: out of range", t))
	case t == 253 || t == 254 || t == 255:
		errs = append(errs, fmt.Errorf("routeTableProxy %d: reserved for the default/main/local table", t))
	}
	if p := c.ProxyRulePriority; p <= 0 || p >= 32766 {
		errs = append(errs, fmt.Errorf("proxyRulePriority %d: want 1-32765 (between the local and main rules)", p))
	}
	if c.ProxyMask == 0 {
		errs = append(errs, errors.New("proxyMask: must not be zero"))
	}
	if c.ProxyMark == 0 || c.ProxyMark&^c.ProxyMask != 0 {
		errs = append(errs, fmt.Errorf("proxyMark %#x: want non-zero bits inside proxyMask %#x", c.ProxyMark, c.ProxyMask))
	}
	if c.MTU != 0 && (c.MTU < 1280 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf("mtu %d: want 0 (default) or 1280-65535", c.MTU))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate endpoint config: %w", err)
	}
	return nil
}

// epCleanName reports whether s uses only characters that are safe in a file
// name, an interface alias and a log line.
func epCleanName(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) < 0
}
