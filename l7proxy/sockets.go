package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"golang.org/x/sys/unix"
)

// boundListener is the sockets and HTTP server of one listener.
type boundListener struct {
	name        string
	addrs       []netip.AddrPort // as configured
	transparent bool
	lns         []net.Listener
	srv         *http.Server
	clients     *clientTuples
}

// reconcileSockets binds the sockets of listeners that are new or whose
// addresses changed and closes those of listeners that are gone. Caller
// holds p.mu. Open connections of a closed listener finish their current
// request and close.
func (p *Proxy) reconcileSockets(want map[string]*listenerSpec) error {
	for name, b := range p.sockets {
		ls, ok := want[name]
		if ok && slices.Equal(ls.addrs, b.addrs) && ls.transparent == b.transparent {
			continue
		}
		b.close()
		delete(p.sockets, name)
	}
	var errs []error
	for name, ls := range want {
		if _, ok := p.sockets[name]; ok {
			continue
		}
		b, err := p.bind(ls)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.sockets[name] = b
	}
	return errors.Join(errs...)
}

func (p *Proxy) bind(ls *listenerSpec) (*boundListener, error) {
	b := &boundListener{name: ls.name, addrs: ls.addrs, transparent: ls.transparent, clients: newClientTuples()}
	addrs := make([]string, 0, len(ls.addrs))
	lc := net.ListenConfig{}
	if p.cfg.ListenOverride != "" {
		addrs = append(addrs, p.cfg.ListenOverride)
	} else {
		for _, a := range ls.addrs {
			addrs = append(addrs, a.String())
		}
		if ls.transparent {
			lc.Control = transparentControl
		}
	}
	for _, a := range addrs {
		network := "tcp4"
		if ap, err := netip.ParseAddrPort(a); err == nil && ap.Addr().Is6() {
			network = "tcp6"
		}
		ln, err := lc.Listen(p.serveCtx, network, a)
		if err != nil {
			for _, l := range b.lns {
				_ = l.Close()
			}
			return nil, fmt.Errorf("bind listener %q on %s: %w", ls.name, a, err)
		}
		b.lns = append(b.lns, ln)
	}
	b.srv = p.newServer(ls.name, b.clients)
	for _, ln := range b.lns {
		al := &acceptListener{Listener: ln, p: p, name: ls.name, clients: b.clients}
		srv := b.srv
		p.group.Go(func() error {
			if err := srv.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				p.log.Warn("listener stopped", "listener", al.name, "error", err)
			}
			return nil
		})
	}
	p.log.Info("listener bound", "listener", ls.name, "addresses", addrs, "transparent", ls.transparent && p.cfg.ListenOverride == "")
	return b, nil
}

// close stops accepting; open connections finish their request and close.
func (b *boundListener) close() {
	b.srv.SetKeepAlivesEnabled(false)
	for _, ln := range b.lns {
		_ = ln.Close()
	}
}

func (p *Proxy) closeSockets() {
	p.mu.Lock()
	socks := p.sockets
	p.sockets = map[string]*boundListener{}
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace)
	defer cancel()
	for _, b := range socks {
		_ = b.srv.Shutdown(ctx)
		_ = b.srv.Close()
	}
}

func (p *Proxy) newServer(name string, clients *clientTuples) *http.Server {
	h2s := &http2.Server{IdleTimeout: p.cfg.IdleTimeout}
	// Only the HTTP/2 preface goes to the h2c handler: it would also
	// switch an HTTP/1 "Upgrade: h2c" request to HTTP/2, which Envoy never
	// does (serveHTTP serves those as HTTP/1.1, see upgradeOf).
	h2 := h2c.NewHandler(http.HandlerFunc(p.serveHTTP), h2s)
	entry := func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PRI" && r.ProtoMajor == 2 {
			h2.ServeHTTP(w, r)
			return
		}
		p.serveHTTP(w, r)
	}
	srv := &http.Server{
		Handler:                      http.HandlerFunc(entry),
		MaxHeaderBytes:               p.cfg.MaxRequestHeaderBytes,
		IdleTimeout:                  p.cfg.IdleTimeout,
		DisableGeneralOptionsHandler: true,
		ErrorLog:                     p.errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pc, ok := c.(*proxyConn); ok {
				ctx = context.WithValue(ctx, connKey{}, pc.info)
				info := pc.info
				ctx = context.WithValue(ctx, keepSourceKey{}, &keepSourceInfo{
					clients: clients,
					keep:    func() bool { return p.keepSource(info) },
				})
				return ctx
			}
			return ctx
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				p.stats.cxActive.WithLabelValues(name).Inc()
				p.stats.cxTotal.WithLabelValues(name).Inc()
			case http.StateClosed, http.StateHijacked:
				p.stats.cxActive.WithLabelValues(name).Dec()
			}
		},
	}
	return srv
}

// transparentControl sets IP_TRANSPARENT and IP_FREEBIND (or their IPv6
// twins): the datapath hands the listener connections for addresses that
// are not the node's, and the accepted socket's local address is then the
// original destination.
func transparentControl(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if network == "tcp6" {
			serr = errors.Join(
				unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1),
				unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1))
			return
		}
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1),
			unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1))
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set IP_TRANSPARENT (needs CAP_NET_ADMIN): %w", serr)
	}
	return nil
}

// acceptListener picks the filter chain of each accepted connection and
// closes those that match none.
type acceptListener struct {
	net.Listener
	p       *Proxy
	name    string
	clients *clientTuples
}

func (l *acceptListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		info, reason := l.p.classify(l.name, c)
		if info == nil {
			l.p.m.connsRejected.WithLabelValues(l.name, reason).Inc()
			l.p.log.Debug("connection closed before HTTP", "listener", l.name, "reason", reason,
				"remote", c.RemoteAddr().String(), "local", c.LocalAddr().String())
			_ = c.Close()
			continue
		}
		key := [2]netip.AddrPort{info.source, info.dest}
		l.clients.add(key)
		return &proxyConn{Conn: newFrameGuard(c, l.p.cfg.MaxRequestHeaderBytes), info: info, clients: l.clients, key: key}, nil
	}
}

func (p *Proxy) classify(name string, c net.Conn) (*connInfo, string) {
	src, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return nil, "bad_address"
	}
	var dst netip.AddrPort
	if p.cfg.OriginalDestination != nil {
		if dst, err = p.cfg.OriginalDestination(c); err != nil {
			return nil, "no_original_destination"
		}
	} else if dst, err = netip.ParseAddrPort(c.LocalAddr().String()); err != nil {
		return nil, "bad_address"
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	snap := p.snap.Load()
	ls := snap.listeners[name]
	if ls == nil {
		return nil, "no_listener"
	}
	chain := ls.matchChain(src.Addr(), dst.Addr())
	if chain == nil {
		return nil, "no_filter_chain"
	}
	return &connInfo{listener: name, accepted: chain, source: src, dest: dst}, ""
}

// currentChain matches the connection's filter chain again in snap; nil
// when its listener or every chain it could match is gone.
func currentChain(snap *snapshot, ci *connInfo) *chainSpec {
	ls := snap.listeners[ci.listener]
	if ls == nil {
		return nil
	}
	return ls.matchChain(ci.source.Addr(), ci.dest.Addr())
}

// proxyConn carries the connection's configuration to the handler.
type proxyConn struct {
	net.Conn
	info    *connInfo
	clients *clientTuples
	key     [2]netip.AddrPort
	once    sync.Once
}

// Close closes the connection and forgets its tuple.
func (c *proxyConn) Close() error {
	c.once.Do(func() { c.clients.remove(c.key) })
	return c.Conn.Close()
}

// clientTuples counts a listener's open downstream connections by (client,
// original destination). An upstream connection that keeps the client's
// address must not take the tuple of one of them: at the server's veth the
// datapath tracks both under one entry (see sourceTransport.dialer).
type clientTuples struct {
	mu sync.Mutex
	n  map[[2]netip.AddrPort]int
}

func newClientTuples() *clientTuples {
	return &clientTuples{n: map[[2]netip.AddrPort]int{}}
}

func (c *clientTuples) add(k [2]netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[k]++
}

func (c *clientTuples) remove(k [2]netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[k] <= 1 {
		delete(c.n, k)
		return
	}
	c.n[k]--
}

// has says whether a downstream connection from client to dest is open.
func (c *clientTuples) has(client, dest netip.AddrPort) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[[2]netip.AddrPort{client, dest}] > 0
}
