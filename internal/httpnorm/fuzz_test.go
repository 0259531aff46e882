package httpnorm

import (
	"strings"
	"testing"
)

func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/public", "/x/../public", "//a//b", "/a%2Fb", "/a%5c..%5cb", "/..;x/y",
		"/a#f", "/%2e%2E/", "/a\x00", "/a?b=%2F", "*", "/caf\xc3\xa9", "/a\\b", "/%", "/a/b//../c",
		"/public/..;/admin", "/public/%2e%2e;/admin", "/public//../admin", "/public/.//..//admin",
		"/public/%252e%252e/admin", "/public/%c0%ae%c0%ae/admin", "/./public/../admin", "/public/%EF%BC%8E",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, mode := range []Mode{ModeEnvoy, ModeStrict} {
			checkNormalize(t, raw, mode)
		}
		// Strict is never more permissive than Envoy, and where it
		// forwards, both forward the same path.
		s, e := Normalize(raw, ModeStrict), Normalize(raw, ModeEnvoy)
		if s.Action != Reject && (s.Action != e.Action || s.Path != e.Path) {
			t.Fatalf("Normalize(%q): strict %+v, envoy %+v", raw, s, e)
		}
		if s.Action == Redirect {
			t.Fatalf("Normalize(%q, ModeStrict) redirects", raw)
		}
	})
}

func checkNormalize(t *testing.T, raw string, mode Mode) {
	{
		r := Normalize(raw, mode)
		p, action := r.Path, r.Action
		switch action {
		case Reject:
			if p != "" {
				t.Fatalf("Path(%q) = %q with Reject; want empty path", raw, p)
			}
			return
		case Forward, Redirect:
		default:
			t.Fatalf("Path(%q): unknown action %v", raw, action)
		}
		if !strings.HasPrefix(p, "/") {
			t.Fatalf("Path(%q) = %q: not absolute", raw, p)
		}
		for _, bad := range []string{"//", "/../", "/./", "?", "#", "\\", "%2F", "%2f", "%5C", "%5c"} {
			if strings.Contains(p, bad) {
				t.Fatalf("Path(%q) = %q: contains %q", raw, p, bad)
			}
		}
		if strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") {
			t.Fatalf("Path(%q) = %q: ends in a dot segment", raw, p)
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; c <= ' ' || c >= 0x7f {
				t.Fatalf("Path(%q) = %q: raw byte %#x", raw, p, c)
			}
		}
		// The client follows a redirect with the returned path; that
		// request, like any normalised path, must come back unchanged.
		r2 := Normalize(p, mode)
		if r2.Path != p || r2.Action != Forward {
			t.Fatalf("%v: Path(%q) = %q, then Path(%q) = %q, %v; want idempotent Forward", mode, raw, p, p, r2.Path, r2.Action)
		}
	}
}
