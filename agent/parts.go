package agent

import (
	"context"
	"net/netip"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/datapath"
	"github.com/moatnet/moat/policy"
)

// The reconciler's view of the node: the three parts whose order makes
// enforcement fail closed (attach → L3/L4 maps → proxy ACK → redirects).
// They are defined here, where they are consumed, so that the ordering can
// be unit-tested with fakes; Run wires the real ones (*datapath.Datapath,
// *datapath.EndpointManager, *xds.Server).

// policyMaps is the BPF side: programs on each endpoint's host veth and the
// maps they read.
type policyMaps interface {
	// Attach puts the programs on a host-side veth. An attached interface
	// whose endpoint is not in the maps yet drops everything.
	Attach(ifindex int) error
	Detach(ifindex int) error
	// Sync writes the plan for the endpoints in ifaces. A redirect entry
	// whose proxy is not in proxies is written without a port: it drops.
	Sync(plan *policy.Plan, ifaces map[datapath.EndpointKey]int, proxies datapath.ProxyPorts) error
	// PatchIPCache writes host entries of the ipcache whose identities
	// the maps already hold (the DNS proxy's fast path, dns.go).
	PatchIPCache(delta policy.IPCacheDelta) error
	// LocalIdentities returns the ipcache's prefixes with a node-local
	// (CIDR) identity, as the pinned maps hold them before the first
	// Sync: the numbers an earlier agent gave them.
	LocalIdentities() map[netip.Prefix]policy.ID
}

// endpointPlumbing makes (or adopts) and removes the endpoints' veths and
// network namespaces.
type endpointPlumbing interface {
	Ensure(ctx context.Context, ep policy.Endpoint) (datapath.EndpointLink, error)
	Remove(ctx context.Context, ep policy.Endpoint) error
	Config() datapath.EndpointConfig
}

// proxyConfig serves the proxy's resources and reports its ACKs.
type proxyConfig interface {
	SetResources(ctx context.Context, node, version string, res map[resource.Type][]types.Resource) error
	// WaitForACK returns nil once node ACKed version, an error when it
	// NACKed it or never subscribed, or ctx's error.
	WaitForACK(ctx context.Context, node, version string, typeURLs ...string) error
}

var (
	_ policyMaps       = (*datapath.Datapath)(nil)
	_ endpointPlumbing = (*datapath.EndpointManager)(nil)
)
