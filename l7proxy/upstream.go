package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// upstream is the connection pool of one ORIGINAL_DST cluster: requests
// go to the connection's original destination, from sockets that carry the
// cluster's SO_MARK. One transport per cluster keeps pooling per mark (per
// source identity): a connection opened for one identity is never reused
// for another.
type upstream struct {
	spec      *clusterSpec
	transport *sourceTransport
	proxy     *httputil.ReverseProxy
}

func newUpstream(spec *clusterSpec, skipSockopts bool, errorLog *log.Logger, onError func(http.ResponseWriter, *http.Request, error)) *upstream {
	st := &sourceTransport{spec: spec, sockopts: spec.hasMark && !skipSockopts, pools: map[netip.Addr]*http.Transport{}}
	u := &upstream{spec: spec, transport: st}
	u.proxy = &httputil.ReverseProxy{
		Transport:    st,
		Rewrite:      rewriteUpstream,
		ErrorLog:     errorLog,
		ErrorHandler: onError,
		// Runs before ReverseProxy's own 101 handling.
		ModifyResponse: refuseSwitch,
		FlushInterval:  -1, // stream as Envoy does
	}
	return u
}

// maxSourcePools bounds the per-source pools of one cluster; beyond it the
// pools start afresh (their connections in use finish, idle ones close).
const maxSourcePools = 4096

// sourceTransport is the cluster's upstream connection pools, one per source
// address. An upstream connection keeps the client's address where
// Proxy.keepSource says so, so that the server and its policy see the
// client and not the node: a transparent socket (IP_TRANSPARENT) bound to
// the client's address, port chosen by the kernel. The server's replies,
// addressed to the client, come back to this socket because the datapath
// assigns them to it (bpf/proxy.h, proxy_return: at the server's veth, or at
// an uplink for a server outside the node). A pool per source keeps a
// connection opened for one client from carrying another's requests.
// Connections that leave from the node's address share the pool of the zero
// address.
type sourceTransport struct {
	spec     *clusterSpec
	sockopts bool // apply SO_MARK and IP_TRANSPARENT (needs CAP_NET_ADMIN)

	mu    sync.Mutex
	pools map[netip.Addr]*http.Transport
}

// RoundTrip sends r through the pool of the source its exchange keeps.
func (s *sourceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return s.pool(s.source(r.Context())).RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of every pool.
func (s *sourceTransport) CloseIdleConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.pools {
		t.CloseIdleConnections()
	}
}

// source returns the address an upstream connection of the request leaves
// from: the client's when keepSource says so, else the zero address (the
// node's, chosen by routing).
func (s *sourceTransport) source(ctx context.Context) netip.Addr {
	if !s.sockopts {
		return netip.Addr{}
	}
	ex := exchangeFrom(ctx)
	ks, _ := ctx.Value(keepSourceKey{}).(*keepSourceInfo)
	if ex == nil || ks == nil || !ks.keep() || !ex.source.IsValid() || ex.source.Addr().Is4() != ex.dest.Addr().Is4() {
		return netip.Addr{}
	}
	return ex.source.Addr()
}

func (s *sourceTransport) pool(src netip.Addr) *http.Transport {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.pools[src]; t != nil {
		return t
	}
	if len(s.pools) >= maxSourcePools {
		for _, t := range s.pools {
			t.CloseIdleConnections()
		}
		clear(s.pools)
	}
	t := &http.Transport{
		DialContext:           s.dialer(src),
		Proxy:                 nil,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       time.Hour,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	s.pools[src] = t
	return t
}

// errClientTuple: the kernel gave the upstream socket a port that makes its
// tuple a downstream connection's.
var errClientTuple = errors.New("upstream source port makes the tuple of an open client connection")

// dialAttempts bounds the binds that may hit a client connection's tuple.
const dialAttempts = 4

// dialer returns the dial function of the pool of source src. With a
// source, the socket is transparent and bound to it before it connects. Its
// tuple must not be that of an open client connection to the same
// destination (the client's own, or another of its connections through this
// listener): at the server's veth the datapath would take the upstream for
// that connection, whose tuple is the same there. The kernel picks the
// port; one that makes such a tuple is refused and another bind tried.
func (s *sourceTransport) dialer(src netip.Addr) func(ctx context.Context, network, addr string) (net.Conn, error) {
	mark := int(s.spec.mark)
	sockopts := s.sockopts
	control := func(taken func(port uint16) bool) func(string, string, syscall.RawConn) error {
		return func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				if sockopts {
					if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark); err != nil {
						serr = fmt.Errorf("set SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, err)
						return
					}
				}
				if src.IsValid() {
					serr = bindTransparent(int(fd), src, taken)
				}
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		taken := func(uint16) bool { return false }
		if ks, _ := ctx.Value(keepSourceKey{}).(*keepSourceInfo); ks != nil {
			clients := ks.clients
			if dest, err := netip.ParseAddrPort(addr); err == nil {
				dest = netip.AddrPortFrom(dest.Addr().Unmap(), dest.Port())
				taken = func(port uint16) bool { return clients.has(netip.AddrPortFrom(src, port), dest) }
			}
		}
		if src.IsValid() {
			network = "tcp6"
			if src.Is4() {
				network = "tcp4"
			}
		}
		for attempt := 1; ; attempt++ {
			d := &net.Dialer{Timeout: s.spec.connectTimeout, KeepAlive: 30 * time.Second, Control: control(taken)}
			c, err := d.DialContext(ctx, network, addr)
			if errors.Is(err, errClientTuple) && attempt < dialAttempts {
				continue
			}
			return c, err
		}
	}
}

// bindTransparent makes the socket transparent (it may use an address that
// is not the node's) and binds it to src with a port the kernel picks.
func bindTransparent(fd int, src netip.Addr, taken func(port uint16) bool) error {
	var err error
	var sa unix.Sockaddr
	if src.Is4() {
		err = unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		sa = &unix.SockaddrInet4{Addr: src.As4()}
	} else {
		err = unix.SetsockoptInt(fd, unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
		sa = &unix.SockaddrInet6{Addr: src.As16()}
	}
	if err != nil {
		return fmt.Errorf("set IP_TRANSPARENT on the upstream socket (needs CAP_NET_ADMIN): %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind upstream socket to the client's address %v: %w", src, err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("read upstream socket address: %w", err)
	}
	var port int
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		port = a.Port
	case *unix.SockaddrInet6:
		port = a.Port
	}
	if taken(uint16(port)) {
		return errClientTuple
	}
	return nil
}

// keepSourceKey carries, in a downstream connection's context, a
// *keepSourceInfo when its upstream connections may keep the client's
// address.
type keepSourceKey struct{}

// keepSourceInfo: the listener's open client tuples and whether, now, an
// upstream connection of the downstream connection keeps the client's
// address (asked per request: the proxy's configuration may change).
type keepSourceInfo struct {
	clients *clientTuples
	keep    func() bool
}

// keepSource says whether the upstream connections of a downstream
// connection leave from the client's address. They do when the server's
// replies come back to the proxy's socket because the datapath hands them
// to it:
//   - on a listener with the original_src filter (envoy/ puts it on the
//     ingress listener, whose destinations are the local endpoints its
//     chains match; their replies leave through the endpoint's veth);
//   - towards a local endpoint (Config.LocalDestination: the egress proxy),
//     whose replies leave through its veth;
//   - towards an address the host routes through an uplink
//     (Config.UplinkDestination: a server outside the node, another node's
//     pod), whose replies arrive there;
//
// but not to a destination that the ingress listener takes: the ingress
// proxy's answers to the upstream are then made in the host itself, and
// routing would send them to the client's veth, not back to this socket.
//
// Any other destination (the node itself, an interface without the
// datapath's uplink program) is reached from the node's address.
func (p *Proxy) keepSource(ci *connInfo) bool {
	snap := p.snap.Load()
	if ls := snap.listeners[ci.listener]; ls != nil && ls.originalSrc {
		return true
	}
	dest := ci.dest.Addr()
	local := p.cfg.LocalDestination != nil && p.cfg.LocalDestination(dest)
	if !local && (p.cfg.UplinkDestination == nil || !p.cfg.UplinkDestination(dest)) {
		return false
	}
	for _, ls := range snap.listeners {
		if ls.originalSrc && ls.matchChain(ci.source.Addr(), dest) != nil {
			return false
		}
	}
	return true
}

// rewriteUpstream points the outgoing request at the original destination
// with the normalised path. The request target goes out byte for byte as
// the filters saw it: the normalised path, which keeps its percent-escapes
// (URL.Opaque is written verbatim; Path alone would be escaped again, turning
// "%20" into "%2520"), then the client's query unchanged. The client's
// X-Forwarded-* headers pass as they are (skip_xff_append);
// X-Forwarded-Proto says http, as Envoy sets it.
func rewriteUpstream(pr *httputil.ProxyRequest) {
	ex := exchangeFrom(pr.In.Context())
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = ex.dest.String()
	// A normalised path starts with exactly one '/' (slashes are merged),
	// so RequestURI never mistakes the opaque part for a network path.
	pr.Out.URL.Opaque = ex.req.path
	pr.Out.URL.RawPath = ex.req.path
	if p, err := url.PathUnescape(ex.req.path); err == nil {
		pr.Out.URL.Path = p
	}
	pr.Out.URL.RawQuery = ex.req.query
	pr.Out.URL.ForceQuery = false
	pr.Out.Host = pr.In.Host
	if v, ok := pr.In.Header["X-Forwarded-For"]; ok {
		pr.Out.Header["X-Forwarded-For"] = v
	}
	if v, ok := pr.In.Header["X-Forwarded-Host"]; ok {
		pr.Out.Header["X-Forwarded-Host"] = v
	}
	pr.Out.Header.Set("X-Forwarded-Proto", "http")
}

// upstreamFailure describes a failed upstream exchange like Envoy's
// response code details.
func upstreamFailure(err error) (status int, details, body string) {
	var ne net.Error
	switch {
	case errors.Is(err, errUnexpectedSwitch):
		return http.StatusServiceUnavailable, "upstream_reset_before_response_started{protocol_error}",
			"upstream connect error or disconnect/reset before headers. reset reason: protocol error"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "upstream_response_timeout", "upstream request timeout"
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusServiceUnavailable, "upstream_reset_before_response_started{connection_timeout}",
			"upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return http.StatusServiceUnavailable, "upstream_reset_before_response_started{connection_failure}",
			"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	}
	return http.StatusServiceUnavailable, "upstream_reset_before_response_started{remote_reset}",
		"upstream connect error or disconnect/reset before headers. reset reason: remote reset"
}
