package l7proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
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
	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

func newUpstream(spec *clusterSpec, skipSockopts bool, errorLog *log.Logger, onError func(http.ResponseWriter, *http.Request, error)) *upstream {
	d := &net.Dialer{Timeout: spec.connectTimeout, KeepAlive: 30 * time.Second}
	if spec.hasMark && !skipSockopts {
		mark := int(spec.mark)
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
			}); err != nil {
				return err
			}
			if serr != nil {
				return fmt.Errorf("set SO_MARK %#x (needs CAP_NET_ADMIN): %w", mark, serr)
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		Proxy:                 nil,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       time.Hour,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	u := &upstream{spec: spec, transport: tr}
	u.proxy = &httputil.ReverseProxy{
		Transport:    tr,
		Rewrite:      rewriteUpstream,
		ErrorLog:     errorLog,
		ErrorHandler: onError,
		// Runs before ReverseProxy's own 101 handling.
		ModifyResponse: refuseSwitch,
		FlushInterval:  -1, // stream as Envoy does
	}
	return u
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
