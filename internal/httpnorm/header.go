package httpnorm

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
