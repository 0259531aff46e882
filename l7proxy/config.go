package l7proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultBackoffMin        = 250 * time.Millisecond
	DefaultBackoffMax        = 10 * time.Second
	DefaultShutdownGrace     = 2 * time.Second
	DefaultMaxRequestHeaders = 60 << 10 // Envoy's max_request_headers_kb default
	DefaultIdleTimeout       = time.Hour
	DefaultAccessLogQueue    = 4096
)

// Config configures the proxy. Flags and the agent's config file map onto it.
type Config struct {
	// Node is the xDS node ID (the node name).
	Node string
	// Cluster is the xDS node cluster, optional.
	Cluster string
	// XDSTarget is the agent's xDS server: a unix socket ("/run/moat/xds.sock"
	// or "unix:/run/moat/xds.sock") or a TCP host:port.
	XDSTarget string
	// AccessLogTarget is where the gRPC access-log service listens (same
	// forms as XDSTarget). Envoy finds it through a static bootstrap cluster,
	// which never travels over xDS; every access-log config's cluster name
	// resolves to this target. Empty disables access logs.
	AccessLogTarget string
	// AdminAddr is the admin interface: a unix socket path or a loopback
	// host:port. Empty disables it.
	AdminAddr string

	// BackoffMin and BackoffMax bound the delay between xDS reconnects.
	BackoffMin, BackoffMax time.Duration
	// ShutdownGrace bounds how long Run waits for open connections on exit.
	ShutdownGrace time.Duration
	// MaxRequestHeaderBytes bounds a request head. Default 60 KiB.
	MaxRequestHeaderBytes int
	// IdleTimeout closes idle downstream connections. Default 1h (Envoy's).
	IdleTimeout time.Duration
	// AccessLogQueue bounds the entries waiting to be sent; beyond it
	// entries are dropped and counted.
	AccessLogQueue int
	// Clock returns the current time; defaults to time.Now.
	Clock func() time.Time
	// LocalDestination says whether an address is a local endpoint's. The
	// egress proxy's upstream connections to one keep the client's address
	// (the ingress proxy's always do); nil: none is, they leave from the
	// node's address.
	LocalDestination func(netip.Addr) bool
	// UplinkDestination says whether the replies from an address that is
	// not a local endpoint's come back to the proxy's socket: the host
	// routes it through an uplink whose datapath program hands them to the
	// proxy (datapath.UplinkRoutes). The egress proxy's upstream
	// connections to one keep the client's address too; nil: none does,
	// they leave from the node's address.
	UplinkDestination func(netip.Addr) bool

	// Test hooks. ListenOverride, when set ("127.0.0.1:0"), binds every
	// listener there instead of its xDS address, without IP_TRANSPARENT;
	// (*Proxy).ListenerAddr tells where. OriginalDestination, when set,
	// replaces the accepted socket's local address as the original
	// destination (RBAC destination_ip/port, filter-chain match, upstream).
	// SkipSocketOptions does not apply clusters' socket options (SO_MARK
	// needs CAP_NET_ADMIN).
	ListenOverride      string
	OriginalDestination func(net.Conn) (netip.AddrPort, error)
	SkipSocketOptions   bool
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.MaxRequestHeaderBytes == 0 {
		c.MaxRequestHeaderBytes = DefaultMaxRequestHeaders
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.AccessLogQueue == 0 {
		c.AccessLogQueue = DefaultAccessLogQueue
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}

// Validate reports every invalid field of a defaulted Config.
func (c Config) Validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("node: must not be empty"))
	}
	if _, err := grpcTarget(c.XDSTarget); err != nil {
		errs = append(errs, fmt.Errorf("xdsTarget: %w", err))
	}
	if c.AccessLogTarget != "" {
		if _, err := grpcTarget(c.AccessLogTarget); err != nil {
			errs = append(errs, fmt.Errorf("accessLogTarget: %w", err))
		}
	}
	if c.AdminAddr != "" && !isUnixPath(c.AdminAddr) {
		host, _, err := net.SplitHostPort(c.AdminAddr)
		if err != nil {
			errs = append(errs, fmt.Errorf("adminAddr: %w", err))
		} else if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback()) {
			errs = append(errs, fmt.Errorf("adminAddr: %q is not a loopback address (nor a unix socket)", c.AdminAddr))
		}
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		errs = append(errs, fmt.Errorf("backoff: need 0 < min (%s) <= max (%s)", c.BackoffMin, c.BackoffMax))
	}
	if c.ShutdownGrace < 0 {
		errs = append(errs, fmt.Errorf("shutdownGrace: %s is negative", c.ShutdownGrace))
	}
	if c.MaxRequestHeaderBytes < 1024 {
		errs = append(errs, fmt.Errorf("maxRequestHeaderBytes: %d is below 1024", c.MaxRequestHeaderBytes))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idleTimeout: %s is negative", c.IdleTimeout))
	}
	if c.AccessLogQueue < 1 {
		errs = append(errs, fmt.Errorf("accessLogQueue: %d is below 1", c.AccessLogQueue))
	}
	if c.Clock == nil {
		errs = append(errs, errors.New("clock: must not be nil"))
	}
	if c.ListenOverride != "" {
		if _, err := netip.ParseAddrPort(c.ListenOverride); err != nil {
			errs = append(errs, fmt.Errorf("listenOverride: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("validate l7proxy config: %w", err)
	}
	return nil
}

func isUnixPath(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, "unix:")
}

// grpcTarget turns a socket path or host:port into a gRPC dial target.
func grpcTarget(s string) (string, error) {
	switch {
	case s == "":
		return "", errors.New("must not be empty")
	case strings.HasPrefix(s, "unix:"):
		if strings.TrimPrefix(strings.TrimPrefix(s, "unix:"), "//") == "" {
			return "", fmt.Errorf("%q: empty socket path", s)
		}
		return s, nil
	case strings.HasPrefix(s, "/"):
		return "unix:" + s, nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", fmt.Errorf("%q is neither a socket path nor host:port: %w", s, err)
	}
	return "passthrough:///" + s, nil
}
