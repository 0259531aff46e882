package httpnorm

import (
	"strconv"
	"strings"
)

// Action is what the connection manager does with a request after it has
// normalised the request target.
type Action int

const (
	// Forward: the request goes on to the HTTP filters with the returned path.
	Forward Action = iota
	// Redirect: the target contained an escaped slash (%2F, %2f, %5C, %5c).
	// Envoy answers with a redirect to the returned (unescaped and
	// normalised) path; the filters do not see this request, only the
	// client's follow-up request for the returned path.
	Redirect
	// Reject: the connection manager answers 400 and the filters never see
	// the request.
	Reject
)

// String returns the action's name.
func (a Action) String() string {
	switch a {
	case Forward:
		return "Forward"
	case Redirect:
		return "Redirect"
	case Reject:
		return "Reject"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Path returns the path the HTTP filters see for a request target, and what
// the connection manager does with the request.
//
// The returned path never includes the query string. For Reject the path is
// empty. The steps, in Envoy's order:
//
//  1. Validation. Only origin-form targets ("/..." as in RFC 9112 section
//     3.2.1) are accepted: the asterisk-form "*" of OPTIONS, absolute-form and
//     authority-form are rejected (moat sits in front of origin servers, not
//     as a forward proxy; rejecting "*" keeps the model simple). A target
//     containing '#' (a fragment has no business on the wire), a NUL, a
//     control byte (0x00-0x1F, 0x7F) or a space is rejected, and so is a '%'
//     not followed by two hex digits, anywhere in the target including the
//     query.
//  2. Escaped slashes: %2F and %5C (either case) are decoded; if any was
//     present the action is Redirect.
//  3. RFC 3986 normalisation: percent-encodings of unreserved characters
//     (ALPHA, DIGIT, '-', '.', '_', '~') are decoded, the hex digits of the
//     remaining percent-encodings are upper-cased, bytes that may not appear
//     raw in a path (non-ASCII, and `"<>^{|}` and '`') are percent-encoded,
//     a backslash is treated as a slash (as Envoy's URL canonicaliser does
//     for http URLs), and dot segments are removed (section 5.2.4): "." and
//     ".." segments, including ones spelt "%2E", disappear; ".." never
//     climbs above the root. A segment that merely starts with dots, such as
//     "..;param" or "...", is an ordinary segment and is kept as is: Envoy
//     does not interpret path parameters, so neither do we; a back end that
//     does (Tomcat) may treat "..;x" as "..", which a policy author must keep
//     in mind.
//  4. Merging slashes: runs of '/' become one '/'.
func Path(raw string) (string, Action) {
	if raw == "" || raw[0] != '/' {
		return "", Reject
	}
	// Validate the whole target, query included.
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f || c == ' ' || c == '#':
			return "", Reject
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return "", Reject
			}
			i += 2
		}
	}
	p := raw
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p = p[:q]
	}

	// Steps 2 and 3a: decode, canonicalise bytes, turn '\' into '/'.
	action := Forward
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
			switch {
			case v == '/' || v == '\\':
				action = Redirect
				b.WriteByte('/')
			case isUnreserved(v):
				b.WriteByte(v)
			default:
				writeEscaped(&b, v)
			}
		case c == '\\':
			b.WriteByte('/')
		case mustEscape(c):
			writeEscaped(&b, c)
		default:
			b.WriteByte(c)
		}
	}

	// Steps 3b and 4: dot segments, then merge slashes.
	return removeDotsAndMerge(b.String()), action
}

// removeDotsAndMerge removes "." and ".." segments from an absolute path
// (which starts with '/') and then drops empty segments, keeping a trailing
// slash when the input had one or ended in a dot segment.
func removeDotsAndMerge(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			trailing = last
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = last
		default:
			out = append(out, s)
			trailing = false
		}
	}
	// Merge slashes: empty segments vanish. An empty last segment means
	// the path ended with '/'.
	var b strings.Builder
	b.Grow(len(p))
	for i, s := range out {
		if s == "" {
			if i == len(out)-1 {
				trailing = true
			}
			continue
		}
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || b.Len() == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// mustEscape reports whether a byte that passed validation may not appear
// raw in a canonical path.
func mustEscape(c byte) bool {
	if c >= 0x80 {
		return true
	}
	switch c {
	case '"', '<', '>', '^', '`', '{', '|', '}':
		return true
	}
	return false
}

func writeEscaped(b *strings.Builder, c byte) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('%')
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}
