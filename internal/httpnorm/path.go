package httpnorm

import (
	"strconv"
	"strings"
	"unicode/utf8"
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
	// client's follow-up request for the returned path. Only ModeEnvoy
	// redirects.
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

// Mode chooses how strict normalisation is.
type Mode int

const (
	// ModeStrict is moat's default: besides what Envoy rejects, it rejects
	// every request target whose meaning differs between common back ends
	// or depends on the order of normalisation steps (see Normalize).
	ModeStrict Mode = iota
	// ModeEnvoy is exactly what Envoy does when its connection manager is
	// configured with normalize_path, merge_slashes and
	// path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT.
	ModeEnvoy
)

// String returns the mode's name, as configuration spells it.
func (m Mode) String() string {
	switch m {
	case ModeStrict:
		return "strict"
	case ModeEnvoy:
		return "envoy"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// ParseMode reads a mode's name ("strict" or "envoy"; empty is strict).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "strict":
		return ModeStrict, nil
	case "envoy":
		return ModeEnvoy, nil
	}
	return 0, &modeError{s}
}

type modeError struct{ s string }

func (e *modeError) Error() string {
	return "parse path mode " + strconv.Quote(e.s) + `: want "strict" or "envoy"`
}

// Result is the outcome of Normalize.
type Result struct {
	// Path is the path the HTTP filters see and the upstream receives
	// (Forward), or the redirect target's path (Redirect); empty for
	// Reject. It never includes the query string.
	Path string
	// Query is the raw query string (after '?'), kept unchanged.
	Query  string
	Action Action
	// Reason says why a request is rejected or redirected, in the style of
	// Envoy's response code details ("path_normalization_failed", ...).
	Reason string
}

// Reasons of Result.
const (
	ReasonInvalid         = "path_normalization_failed"
	ReasonEscapedSlash    = "path_with_escaped_slashes_rejected"
	ReasonEscapedRedirect = "path_with_escaped_slashes_redirected"
	ReasonAmbiguous       = "path_ambiguous_rejected"
)

// Path is Normalize in ModeEnvoy, returning only the path and the action.
func Path(raw string) (string, Action) {
	r := Normalize(raw, ModeEnvoy)
	return r.Path, r.Action
}

// Normalize returns the path the HTTP filters see for a request target, and
// what the connection manager does with the request.
//
// The steps, in Envoy's order (both modes):
//
//  1. Validation. Only origin-form targets ("/..." as in RFC 9112 section
//     3.2.1) are accepted: the asterisk-form "*" of OPTIONS, absolute-form and
//     authority-form are rejected (moat sits in front of origin servers, not
//     as a forward proxy). A target containing '#' (a fragment has no
//     business on the wire), a NUL, a control byte (0x00-0x1F, 0x7F) or a
//     space is rejected, and so is a '%' not followed by two hex digits,
//     anywhere in the target including the query.
//  2. Escaped slashes: %2F and %5C (either case) are decoded; if any was
//     present the action is Redirect (ModeEnvoy) or Reject (ModeStrict).
//  3. RFC 3986 normalisation: percent-encodings of unreserved characters
//     (ALPHA, DIGIT, '-', '.', '_', '~') are decoded, the hex digits of the
//     remaining percent-encodings are upper-cased, bytes that may not appear
//     raw in a path (non-ASCII, and `"<>^{|}` and '`') are percent-encoded,
//     a backslash is treated as a slash (as Envoy's URL canonicaliser does
//     for http URLs), and dot segments are removed (section 5.2.4): "." and
//     ".." segments, including ones spelt "%2E", disappear; ".." never
//     climbs above the root. In ModeEnvoy a segment that merely starts with
//     dots, such as "..;param" or "...", is an ordinary segment and is kept
//     as is, as Envoy does (a back end that interprets path parameters, such
//     as Tomcat, then reads "..;x" as "..": that is why ModeStrict exists).
//  4. Merging slashes: runs of '/' become one '/'.
//
// ModeStrict rejects, before step 2, every target whose meaning depends on
// the back end or on the order of the steps above (Reason
// ReasonAmbiguous, or ReasonEscapedSlash for escaped slashes):
//
//   - a raw backslash, and an escaped '/' or '\' (%2F %2f %5C %5c);
//   - a percent-encoded control byte (%00-%1F, %7F);
//   - a dot segment that is encoded ("%2e", ".%2E") or carries path
//     parameters ("..;", ".;x=y", "%2e%2e;"): after decoding every escape and
//     cutting the segment at its first ';', a segment that reads "." or ".."
//     must be exactly "." or ".." on the wire;
//   - a segment made only of dots and spaces other than "." and ".." (Windows
//     back ends strip trailing dots and spaces);
//   - an empty segment ("//", or one that is empty before a ';') next to a dot
//     segment or anywhere before a ".." segment: "/a//../b" is "/a/b" when
//     dot segments go first and "/b" when slashes are merged first (a
//     trailing slash is not an empty segment here);
//   - double (or deeper) encoding of '.', '/', '\', '%' or a control byte
//     ("%252e", "%25%32%65"), which a back end that decodes twice reads as
//     the character itself;
//   - escapes that decode to invalid UTF-8 (overlong forms such as %C0%AE for
//     '.', or %C0%AF for '/'), and characters that Unicode compatibility
//     normalisation (NFKC) turns into '.', '/' or '\' (fullwidth and other
//     look-alikes).
//
// Whatever a mode forwards, Path is idempotent: Normalize(Path) forwards the
// same Path, so what the policy judged is exactly what the upstream gets.
func Normalize(raw string, mode Mode) Result {
	if raw == "" || raw[0] != '/' {
		return Result{Action: Reject, Reason: ReasonInvalid}
	}
	// Validate the whole target, query included.
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c < 0x20 || c == 0x7f || c == ' ' || c == '#':
			return Result{Action: Reject, Reason: ReasonInvalid}
		case c == '%':
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return Result{Action: Reject, Reason: ReasonInvalid}
			}
			i += 2
		}
	}
	p, query := raw, ""
	if q := strings.IndexByte(p, '?'); q >= 0 {
		p, query = p[:q], p[q+1:]
	}
	if mode != ModeEnvoy {
		if reason := ambiguous(p); reason != "" {
			return Result{Query: query, Action: Reject, Reason: reason}
		}
	}

	// Steps 2 and 3a: decode, canonicalise bytes, turn '\' into '/'.
	res := Result{Query: query, Action: Forward}
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
				res.Action, res.Reason = Redirect, ReasonEscapedRedirect
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
	res.Path = removeDotsAndMerge(b.String())
	return res
}

// ambiguous returns ReasonEscapedSlash or ReasonAmbiguous when the path
// (without query, already validated) is ambiguous, else "".
func ambiguous(p string) string {
	if strings.IndexByte(p, '\\') >= 0 {
		return ReasonAmbiguous
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		v := unhex(p[i+1])<<4 | unhex(p[i+2])
		i += 2
		switch {
		case v == '/' || v == '\\':
			return ReasonEscapedSlash
		case v < 0x20 || v == 0x7f:
			return ReasonAmbiguous
		}
	}
	if encodedTwice(p) {
		return ReasonAmbiguous
	}
	full := decodeAll(p)
	if !utf8.ValidString(full) || hasLookalike(full) {
		return ReasonAmbiguous
	}
	segs := strings.Split(p[1:], "/")
	kinds := make([]segKind, len(segs))
	for i, s := range segs {
		stem, _, _ := strings.Cut(decodeAll(s), ";")
		switch {
		case stem == "." || stem == "..":
			if s != stem {
				return ReasonAmbiguous // encoded or with parameters
			}
			kinds[i] = segDot
		case stem == "":
			kinds[i] = segEmpty
		case strings.Trim(stem, ". ") == "":
			return ReasonAmbiguous // "...", ". .", ".. "
		}
	}
	emptyBefore := false // a non-final empty segment came earlier
	for i, k := range kinds {
		last := i == len(kinds)-1
		switch {
		case k == segEmpty && !(last && segs[i] == ""):
			// The last segment being empty is a trailing slash: "/a/../"
			// is "/" whichever step goes first.
			if i > 0 && kinds[i-1] == segDot {
				return ReasonAmbiguous
			}
			emptyBefore = true
		case k == segDot:
			if i > 0 && kinds[i-1] == segEmpty || segs[i] == ".." && emptyBefore {
				return ReasonAmbiguous
			}
		}
	}
	return ""
}

type segKind uint8

const (
	segOther segKind = iota
	segDot
	segEmpty
)

// encodedTwice reports whether decoding the path more than once reveals an
// escape of '.', '/', '\', '%' or a control byte that the first decoding
// did not show.
func encodedTwice(p string) bool {
	s := p
	for range 4 {
		if !strings.Contains(s, "%25") {
			return false
		}
		// Every escape in next comes from a "%25" in s.
		next := decodeAll(s)
		if countSensitive(next) > 0 {
			return true
		}
		s = next
	}
	return true // four levels deep: nobody means that
}

// countSensitive counts escapes of '.', '/', '\', '%' and control bytes.
func countSensitive(s string) int {
	n := 0
	for i := 0; i+2 < len(s); i++ {
		if s[i] != '%' || !isHex(s[i+1]) || !isHex(s[i+2]) {
			continue
		}
		v := unhex(s[i+1])<<4 | unhex(s[i+2])
		if v == '.' || v == '/' || v == '\\' || v == '%' || v < 0x20 || v == 0x7f {
			n++
		}
		i += 2
	}
	return n
}

// decodeAll decodes every valid percent-escape once; others stay as they are.
func decodeAll(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hasLookalike reports characters that NFKC maps to '.', '/' or '\', or
// that some servers treat as path separators.
func hasLookalike(s string) bool {
	for _, r := range s {
		switch r {
		case '\uFF0E', // fullwidth full stop
			'\uFE52',           // small full stop
			'\u2024', '\u2025', // one and two dot leaders
			'\uFF0F',           // fullwidth solidus
			'\u2215', '\u2044', // division slash, fraction slash
			'\uFF3C', '\uFE68', // fullwidth and small reverse solidus
			'\u2216': // set minus
			return true
		}
	}
	return false
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
