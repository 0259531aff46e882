package l7proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/moatnet/moat/internal/httpnorm"
)

// connInfo is fixed when a connection is accepted: its listener, its
// addresses and the filter chain it matched then. Each request runs the
// configuration current when it arrives (see serveHTTP), not this one.
type connInfo struct {
	listener string
	accepted *chainSpec
	source   netip.AddrPort
	dest     netip.AddrPort
}

// exchange is one request/response, carried in the request context to the
// upstream rewrite and the access log.
type exchange struct {
	*connInfo
	chain   *chainSpec // the filter chain the request runs
	start   time.Time
	req     request
	details string // response code details
	route   string
	cluster string
	upAddr  string
	upLocal netip.AddrPort // the upstream connection's local address
}

type exchangeKey struct{}
type connKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// serveHTTP runs the HTTP connection manager of the connection's filter
// chain, as named phases. Each phase either passes the request on or
// answers it itself (a local reply, recorded in ex.details); only the last
// phase talks to the upstream. Every request is logged once, whichever
// phase answered it.
//
//  1. chain: the request runs the configuration current when it arrives,
//     not the one its connection was accepted with (see currentChain).
//  2. codec: what Envoy's HTTP/1 codec refuses never reaches a filter.
//  3. target: the request target is normalised once (internal/httpnorm);
//     from here on ex.req.path is the only path anyone looks at.
//  4. upgrade: no connection manager this proxy accepts allows upgrades.
//  5. authorize: RBAC judges ex.req.
//  6. route: the route for ex.req, which may answer directly.
//  7. forward: the upstream receives exactly ex.req.path and ex.req.query,
//     the request RBAC judged (rewriteUpstream).
func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	if ci == nil {
		// Not reachable through an accepted connection.
		http.Error(w, "no connection", http.StatusInternalServerError)
		return
	}
	snap := p.snap.Load()
	rec := &recorder{ResponseWriter: w}
	ex := &exchange{connInfo: ci, chain: currentChain(snap, ci), start: p.cfg.Clock()}
	ex.req = request{method: r.Method, authority: r.Host, path: r.URL.Path, source: ci.source, dest: ci.dest}
	if ex.chain == nil {
		// Logged and counted under the chain the connection was accepted
		// with: the one the client last knew.
		ex.chain = ci.accepted
	}
	defer func() { p.finish(ex, r, rec) }()

	if !p.chainPhase(rec, ex, snap) ||
		!p.codecPhase(rec, ex, r) ||
		!p.targetPhase(rec, ex, r) ||
		!p.upgradePhase(rec, ex, r) ||
		!p.authorizePhase(rec, ex) {
		return
	}
	route := p.routePhase(rec, ex, snap, r)
	if route == nil {
		return
	}
	p.forwardPhase(rec, ex, snap, route, r)
}

// chainPhase: a connection whose listener or filter chain is gone gets 403
// and is closed (invariant: no request runs a chain that no longer exists).
func (p *Proxy) chainPhase(rec *recorder, ex *exchange, snap *snapshot) bool {
	if currentChain(snap, ex.connInfo) != nil {
		return true
	}
	p.localReply(rec, ex, ex.chain.hcm, http.StatusForbidden, "", "filter_chain_not_found",
		http.Header{"Connection": {"close"}})
	return false
}

// codecPhase refuses what Envoy's codec refuses before any filter runs:
// header names with underscores or non-token bytes, and CONNECT (closed:
// what follows a CONNECT head is not HTTP/1 framing the frame guard can
// follow).
func (p *Proxy) codecPhase(rec *recorder, ex *exchange, r *http.Request) bool {
	hcm := ex.chain.hcm
	for name := range r.Header {
		if !httpnorm.HeaderName(name) {
			p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", "http1.unexpected_underscore", nil)
			return false
		}
	}
	if r.Method == http.MethodConnect {
		p.localReply(rec, ex, hcm, http.StatusForbidden, "", "connect_not_allowed", http.Header{"Connection": {"close"}})
		return false
	}
	if hcm.pathMode == httpnorm.ModeStrict && !httpnorm.Host(r.Host) {
		p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", "host_ambiguous_rejected", nil)
		return false
	}
	return true
}

// targetPhase normalises the request target in the connection manager's
// path mode (invariant: afterwards ex.req.path is the normalised path that
// RBAC, the route and the upstream all see; a rejected or redirected target
// never reaches them).
func (p *Proxy) targetPhase(rec *recorder, ex *exchange, r *http.Request) bool {
	hcm := ex.chain.hcm
	target := r.RequestURI
	if r.ProtoMajor == 2 || target == "" {
		target = r.URL.RequestURI()
	}
	n := httpnorm.Normalize(target, hcm.pathMode)
	ex.req = request{
		method:    r.Method,
		authority: r.Host,
		path:      n.Path,
		query:     n.Query,
		header: func(name string) (string, bool) {
			vs, ok := r.Header[http.CanonicalHeaderKey(name)]
			if !ok {
				return "", false
			}
			return strings.Join(vs, ","), true
		},
		source: ex.source,
		dest:   ex.dest,
	}
	switch n.Action {
	case httpnorm.Forward:
		return true
	case httpnorm.Redirect:
		if hcm.pathMode == httpnorm.ModeEnvoy {
			loc := n.Path
			if n.Query != "" {
				loc += "?" + n.Query
			}
			p.localReply(rec, ex, hcm, http.StatusTemporaryRedirect, "", n.Reason, http.Header{"Location": {loc}})
			return false
		}
	}
	// Rejected (or a redirect in a mode that does not redirect): the log
	// shows the target as the client sent it.
	ex.req.path, ex.req.query = target, ""
	reason := n.Reason
	if n.Action == httpnorm.Redirect {
		reason = httpnorm.ReasonEscapedSlash
	}
	p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", reason, nil)
	return false
}

// upgradePhase: no connection manager this proxy accepts has
// upgrade_configs, so Envoy refuses every upgrade before the filters. The
// connection closes: the bytes after an upgrade request are not HTTP/1.
func (p *Proxy) upgradePhase(rec *recorder, ex *exchange, r *http.Request) bool {
	if !upgradeOf(r.Header) {
		return true
	}
	p.localReply(rec, ex, ex.chain.hcm, http.StatusForbidden, "", "upgrade_failed", http.Header{"Connection": {"close"}})
	return false
}

// authorizePhase runs the RBAC filter on ex.req (invariant: only a request
// some policy allows goes past it).
func (p *Proxy) authorizePhase(rec *recorder, ex *exchange) bool {
	hcm := ex.chain.hcm
	if ok, policy := hcm.rbac.evaluate(&ex.req); !ok {
		p.stats.rbac(hcm.statPrefix, false)
		p.localReply(rec, ex, hcm, http.StatusForbidden, "RBAC: access denied", "rbac_access_denied_matched_policy["+policy+"]", nil)
		return false
	} else if hcm.rbac != nil {
		p.stats.rbac(hcm.statPrefix, true)
	}
	return true
}

// routePhase finds the route for ex.req and answers a direct response; it
// returns the route to forward on, or nil when the request was answered.
func (p *Proxy) routePhase(rec *recorder, ex *exchange, snap *snapshot, r *http.Request) *routeEntry {
	hcm := ex.chain.hcm
	var route *routeEntry
	if rs := snap.routes[hcm.routeName]; rs != nil {
		route = rs.match(r.Host, ex.req.path)
	}
	if route == nil {
		p.localReply(rec, ex, hcm, http.StatusNotFound, "", "route_not_found", nil)
		return nil
	}
	ex.route = route.name
	if d := route.direct; d != nil {
		rec.Header().Set("Content-Type", "text/plain")
		rec.Header().Set("Content-Length", strconv.Itoa(len(d.body)))
		rec.WriteHeader(d.status)
		_, _ = rec.Write([]byte(d.body))
		ex.details = "direct_response"
		return nil
	}
	return route
}

// forwardPhase sends the request to the route's cluster. Upstream sockets
// come from the transport; the request's own fields (path, headers) were
// checked above and rewriteUpstream sends ex.req's path and query.
func (p *Proxy) forwardPhase(rec *recorder, ex *exchange, snap *snapshot, route *routeEntry, r *http.Request) {
	up := snap.clusters[route.cluster]
	if up == nil {
		p.localReply(rec, ex, ex.chain.hcm, http.StatusServiceUnavailable, "no healthy upstream", "cluster_not_found", nil)
		return
	}
	ex.cluster, ex.upAddr, ex.details = route.cluster, ex.dest.String(), "via_upstream"
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	// The upstream connection's local address goes into the access log, so
	// that flows of the proxy's upstream leg can be shown with the client.
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if ap, err := netip.ParseAddrPort(info.Conn.LocalAddr().String()); err == nil {
			ex.upLocal = ap
		}
	}})
	if route.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, route.timeout)
		defer cancel()
	}
	up.proxy.ServeHTTP(rec, r.WithContext(ctx))
}

// upstreamError answers a failed upstream exchange.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	status, details, body := upstreamFailure(err)
	p.log.Debug("upstream exchange failed", "dest", ex.dest, "cluster", ex.cluster, "error", err)
	rec, _ := w.(*recorder)
	if rec == nil || rec.status != 0 {
		// Headers are out already; the connection is reset by net/http.
		ex.details = "upstream_reset_after_response_started"
		return
	}
	p.localReply(rec, ex, ex.chain.hcm, status, body, details, nil)
}

// localReply sends a reply the proxy generates itself, through the
// connection manager's local reply mappers (the first that matches wins).
func (p *Proxy) localReply(w *recorder, ex *exchange, hcm *hcmSpec, status int, body, details string, hdr http.Header) {
	ex.details = details
	for i := range hcm.localReplies {
		m := &hcm.localReplies[i]
		if !m.matches(status) {
			continue
		}
		if m.hasBody {
			body = m.body
		}
		if m.code != 0 {
			status = int(m.code)
		}
		break
	}
	h := w.Header()
	for k, v := range hdr {
		h[k] = v
	}
	if body != "" {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if status >= 400 && status != http.StatusForbidden {
		// Envoy closes the connection after a codec or normalisation error.
		h.Set("Connection", "close")
	}
	w.WriteHeader(status)
	if body != "" {
		_, _ = w.Write([]byte(body))
	}
}

// finish counts the exchange and hands it to the access loggers.
func (p *Proxy) finish(ex *exchange, r *http.Request, rec *recorder) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	end := p.cfg.Clock()
	p.stats.request(ex.chain.hcm.statPrefix, status)
	if len(ex.chain.hcm.accessLogs) > 0 && p.als != nil {
		p.als.log(ex, r, rec, status, end)
	}
}

// recorder captures the status and body size of a response.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and Hijack (upgrades).
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards to the underlying writer (ReverseProxy flushes through
// the interface).
func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack forwards to the underlying writer for protocol upgrades.
func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
