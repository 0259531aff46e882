package httpnorm

import (
	"net/netip"
	"strings"
)

// HeaderName reports whether Envoy, configured with
// headers_with_underscores_action: REJECT_REQUEST, accepts a request carrying
// a header with this name. It returns false for the empty name, for names
// with an underscore, and for names with a byte that is not an RFC 9110
// token character (which Envoy's codecs reject). HTTP/2 pseudo-headers
// (":path", ":authority", ...) are not header names in this sense and are
// rejected too.
func HeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || !isTokenChar(c) {
			return false
		}
	}
	return true
}

// isTokenChar reports whether c is a tchar of RFC 9110 section 5.6.2.
func isTokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// Host reports whether, in ModeStrict, a Host header is acceptable: a
// plain host name or address with an optional port (letters, digits, '-',
// '.', '_', a bracketed IPv6 address, and a numeric port). Anything else (user info, paths, percent
// escapes, spaces) reads differently to different back ends and virtual
// host matchers. An empty Host (HTTP/1.0) is allowed.
func Host(h string) bool {
	if h == "" {
		return true
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		i := strings.IndexByte(h, ']')
		if i < 0 {
			return false
		}
		if _, err := netip.ParseAddr(h[1:i]); err != nil {
			return false
		}
		host, port = "", h[i+1:]
		if port != "" {
			if port[0] != ':' {
				return false
			}
			port = port[1:]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if port == "" {
			return false
		}
	}
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
	}
	if len(port) > 5 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}
