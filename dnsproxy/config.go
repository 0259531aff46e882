package dnsproxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moatnet/moat/flow"
	"github.com/moatnet/moat/policy"
)

// config.go owns the proxy's configuration and the interfaces the agent
// implements for it.

// EndpointKey names a local endpoint the way the Plan does.
type EndpointKey struct {
	Namespace string
	Name      string
}

// String renders "namespace/name".
func (k EndpointKey) String() string { return k.Namespace + "/" + k.Name }

// EndpointInfo is what the proxy needs to know about the source of a query.
type EndpointInfo struct {
	Identity  policy.ID
	Namespace string
	Name      string
	// Labels are the identity labels ("source:key=value"), for flows.
	Labels []string
}

// Key returns the endpoint's Plan key.
func (e EndpointInfo) Key() EndpointKey { return EndpointKey{e.Namespace, e.Name} }

// Endpoints resolves the source address of a query to the local endpoint
// that owns it. The agent implements it from its endpoint table; it must be
// safe for concurrent use and cheap (it runs once per query).
type Endpoints interface {
	Lookup(ip netip.Addr) (EndpointInfo, bool)
}

// EndpointsFunc adapts a function to Endpoints.
type EndpointsFunc func(ip netip.Addr) (EndpointInfo, bool)

// Lookup implements Endpoints.
func (f EndpointsFunc) Lookup(ip netip.Addr) (EndpointInfo, bool) { return f(ip) }

// Remotes resolves the original destination of a query (the DNS server) to
// its security identity, as the datapath does: a local endpoint's identity,
// else the ipcache's longest-prefix match, else world. DNS rules with
// toEndpoints/toCIDR peers are decided with it. Safe for concurrent use.
type Remotes interface {
	IdentityOf(ip netip.Addr) policy.ID
}

// RemotesFunc adapts a function to Remotes.
type RemotesFunc func(ip netip.Addr) policy.ID

// IdentityOf implements Remotes.
func (f RemotesFunc) IdentityOf(ip netip.Addr) policy.ID { return f(ip) }

// MarkFunc returns the SO_MARK of upstream sockets opened on behalf of a
// source identity. The agent passes
//
//	func(id policy.ID) (uint32, error) { return policy.ProxyMark(policy.Egress, id) }
//
// A nil MarkFunc sets no mark (tests without CAP_NET_ADMIN only: the
// datapath would redirect unmarked upstream traffic back to the proxy).
type MarkFunc func(id policy.ID) (uint32, error)

// Config configures a Proxy. The zero value of each optional field selects
// the default named in its comment.
type Config struct {
	// Listen lists the addresses to bind; each gets a UDP and a TCP
	// socket. Port 0 picks a free port (tests); read the bound ports back
	// with Proxy.Addrs.
	Listen []netip.AddrPort
	// Transparent makes the listeners IP_TRANSPARENT (CAP_NET_ADMIN): the
	// datapath hands them packets addressed to other hosts, and the
	// original destination comes from each datagram (IP_RECVORIGDSTADDR)
	// or accepted connection. Answers then leave from the original
	// server's address.
	Transparent bool
	// StaticDestination, when Transparent is false, is the server every
	// query is forwarded to (tests, or a plain forwarding proxy). Required
	// when Transparent is false.
	StaticDestination netip.AddrPort

	// Endpoints resolves query sources (required).
	Endpoints Endpoints
	// Remotes resolves the DNS server's identity (required).
	Remotes Remotes
	// Mark marks upstream sockets; see MarkFunc.
	Mark MarkFunc
	// InUse tells the cache which addresses live connections use; nil
	// means none.
	InUse InUse
	// OnLearn runs before an answer with selected names is released; nil
	// means nothing to wait for.
	OnLearn LearnFunc
	// OnRelease is called with addresses the cache forgot (expired or
	// evicted); nil means nobody cares.
	OnRelease ReleaseFunc
	// OnFlow receives the flow records of each exchange (a request and,
	// when answered, a response); it must not block. nil drops them.
	OnFlow func(flow.Flow)
	// NodeName goes into flow records.
	NodeName string

	// DenyRcode answers denied queries: dns.RcodeRefused (default) or
	// dns.RcodeNameError (NXDOMAIN).
	DenyRcode int
	// UpstreamTimeout bounds one exchange with the original server,
	// including a TCP retry after truncation (default 2s). Past it the
	// client gets SERVFAIL.
	UpstreamTimeout time.Duration
	// HoldTimeout bounds the wait for OnLearn before an answer is
	// released anyway (default 100ms, Cilium's bound).
	HoldTimeout time.Duration
	// MaxInflight bounds the queries being processed at once (default
	// 4096); MaxInflightPerEndpoint bounds them per source endpoint
	// (default 256). Past either bound the client gets SERVFAIL.
	MaxInflight            int
	MaxInflightPerEndpoint int
	// MaxTCPConns bounds open downstream TCP connections (default 1024);
	// TCPIdleTimeout closes idle ones (default 10s).
	MaxTCPConns    int
	TCPIdleTimeout time.Duration
	// UDPReaders is the number of goroutines reading each UDP socket
	// (default 2).
	UDPReaders int
	// UpstreamSocketQueries is how many UDP queries share an upstream
	// socket, and so a source port (upstream_udp.go). The default, 1,
	// gives every query a fresh random port besides its random ID; more
	// saves about ten system calls per query.
	UpstreamSocketQueries int

	// Cache holds learned names; nil creates one with CacheConfig{}.
	Cache *Cache
	// Store, when set, keeps the state on disk (store.go): every learned
	// answer is journaled before it is released, and Run compacts.
	Store *Store

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Defaults.
const (
	DefaultUpstreamTimeout        = 2 * time.Second
	DefaultHoldTimeout            = 100 * time.Millisecond
	DefaultMaxInflight            = 4096
	DefaultMaxInflightPerEndpoint = 256
	DefaultMaxTCPConns            = 1024
	DefaultTCPIdleTimeout         = 10 * time.Second
	DefaultUDPReaders             = 2
)

func (c *Config) setDefaults() {
	if c.DenyRcode == 0 {
		c.DenyRcode = dns.RcodeRefused
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.HoldTimeout == 0 {
		c.HoldTimeout = DefaultHoldTimeout
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.MaxInflightPerEndpoint == 0 {
		c.MaxInflightPerEndpoint = DefaultMaxInflightPerEndpoint
	}
	if c.MaxTCPConns == 0 {
		c.MaxTCPConns = DefaultMaxTCPConns
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if c.UDPReaders == 0 {
		c.UDPReaders = DefaultUDPReaders
	}
	if c.UpstreamSocketQueries == 0 {
		c.UpstreamSocketQueries = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first problems of c, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("Listen: no address"))
	}
	for i, a := range c.Listen {
		if !a.IsValid() {
			errs = append(errs, fmt.Errorf("Listen[%d]: invalid address", i))
		}
	}
	if !c.Transparent && !c.StaticDestination.IsValid() {
		errs = append(errs, errors.New("StaticDestination: required when Transparent is false (the original destination is unknown)"))
	}
	if c.Endpoints == nil {
		errs = append(errs, errors.New("Endpoints: required"))
	}
	if c.Remotes == nil {
		errs = append(errs, errors.New("Remotes: required"))
	}
	if c.DenyRcode != 0 && c.DenyRcode != dns.RcodeRefused && c.DenyRcode != dns.RcodeNameError {
		errs = append(errs, fmt.Errorf("DenyRcode: %d is neither REFUSED (5) nor NXDOMAIN (3)", c.DenyRcode))
	}
	for name, d := range map[string]time.Duration{"UpstreamTimeout": c.UpstreamTimeout, "HoldTimeout": c.HoldTimeout, "TCPIdleTimeout": c.TCPIdleTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s: negative duration %s", name, d))
		}
	}
	for name, n := range map[string]int{"MaxInflight": c.MaxInflight, "MaxInflightPerEndpoint": c.MaxInflightPerEndpoint, "MaxTCPConns": c.MaxTCPConns, "UDPReaders": c.UDPReaders, "UpstreamSocketQueries": c.UpstreamSocketQueries} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s: negative %d", name, n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dnsproxy config: %w", err)
	}
	return nil
}
