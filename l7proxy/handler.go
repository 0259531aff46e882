package l7proxy

import (
	"bufio"
	"context"
	"net"
	"net/http"
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
}

type exchangeKey struct{}
type connKey struct{}

func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// serveHTTP runs the HTTP connection manager of the connection's filter
// chain: header and path checks, RBAC, route, upstream.
//
// Every request runs the configuration current when it arrives: the filter
// chain is matched again, from the connection's listener and addresses, in
// the latest snapshot. A tightened policy therefore applies to the next
// request of a keep-alive or HTTP/2 connection, not only to new
// connections. (Envoy drains such connections instead and may serve them
// with the old configuration until they close; this is stricter.) A
// connection whose listener or filter chain is gone gets 403 and is closed.
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
	if ex.chain == nil {
		// Logged and counted under the chain the connection was accepted
		// with: the one the client last knew.
		ex.chain = ci.accepted
		defer func() { p.finish(ex, r, rec) }()
		ex.req = request{method: r.Method, authority: r.Host, path: r.URL.Path, source: ci.source, dest: ci.dest}
		p.localReply(rec, ex, ex.chain.hcm, http.StatusForbidden, "", "filter_chain_not_found",
			http.Header{"Connection": {"close"}})
		return
	}
	defer func() { p.finish(ex, r, rec) }()
	hcm := ex.chain.hcm

	// Codec-level checks, before any filter.
	for name := range r.Header {
		if !httpnorm.HeaderName(name) {
			p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", "http1.unexpected_underscore", nil)
			return
		}
	}
	upgrade := upgradeOf(r.Header)
	if r.Method == http.MethodConnect {
		// Closed: what follows a CONNECT head is not HTTP/1 framing the
		// frame guard can follow.
		p.localReply(rec, ex, hcm, http.StatusForbidden, "", "connect_not_allowed", http.Header{"Connection": {"close"}})
		return
	}
	target := r.RequestURI
	if r.ProtoMajor == 2 || target == "" {
		target = r.URL.RequestURI()
	}
	norm, action := httpnorm.Path(target)
	query := ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		query = target[i+1:]
	}
	ex.req = request{
		method:    r.Method,
		authority: r.Host,
		path:      norm,
		query:     query,
		header: func(name string) (string, bool) {
			vs, ok := r.Header[http.CanonicalHeaderKey(name)]
			if !ok {
				return "", false
			}
			return strings.Join(vs, ","), true
		},
		source: ci.source,
		dest:   ci.dest,
	}
	switch {
	case action == httpnorm.Reject:
		ex.req.path = target
		p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", "path_normalization_failed", nil)
		return
	case action == httpnorm.Redirect && hcm.rejectEscapedSlashes:
		p.localReply(rec, ex, hcm, http.StatusBadRequest, "Bad Request", "path_with_escaped_slashes_rejected", nil)
		return
	case action == httpnorm.Redirect:
		loc := norm
		if query != "" {
			loc += "?" + query
		}
		p.localReply(rec, ex, hcm, http.StatusTemporaryRedirect, "", "path_with_escaped_slashes_redirected",
			http.Header{"Location": {loc}})
		return
	}

	if upgrade {
		// No connection manager this proxy accepts has upgrade_configs:
		// Envoy refuses every upgrade before the filters. The connection
		// closes: the bytes after an upgrade request are not HTTP/1.
		p.localReply(rec, ex, hcm, http.StatusForbidden, "", "upgrade_failed", http.Header{"Connection": {"close"}})
		return
	}

	if ok, policy := hcm.rbac.evaluate(&ex.req); !ok {
		p.stats.rbac(hcm.statPrefix, false)
		p.localReply(rec, ex, hcm, http.StatusForbidden, "RBAC: access denied", "rbac_access_denied_matched_policy["+policy+"]", nil)
		return
	} else if hcm.rbac != nil {
		p.stats.rbac(hcm.statPrefix, true)
	}

	rs := snap.routes[hcm.routeName]
	var route *routeEntry
	if rs != nil {
		route = rs.match(r.Host, norm)
	}
	if route == nil {
		p.localReply(rec, ex, hcm, http.StatusNotFound, "", "route_not_found", nil)
		return
	}
	ex.route = route.name
	if d := route.direct; d != nil {
		rec.Header().Set("Content-Type", "text/plain")
		rec.Header().Set("Content-Length", strconv.Itoa(len(d.body)))
		rec.WriteHeader(d.status)
		_, _ = rec.Write([]byte(d.body))
		ex.details = "direct_response"
		return
	}
	up := snap.clusters[route.cluster]
	if up == nil {
		p.localReply(rec, ex, hcm, http.StatusServiceUnavailable, "no healthy upstream", "cluster_not_found", nil)
		return
	}
	ex.cluster, ex.upAddr, ex.details = route.cluster, ci.dest.String(), "via_upstream"
	ctx := context.WithValue(r.Context(), exchangeKey{}, ex)
	if route.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, route.timeout)
		defer cancel()
	}
	// Upstream sockets come from the transport; the request's own fields
	// (path, headers) were checked above.
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
