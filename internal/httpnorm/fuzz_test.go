package httpnorm

import (
	"strings"
	"testing"
)

func FuzzPath(f *testing.F) {
	for _, s := range []string{
		"/", "/public", "/x/../public", "//a//b", "/a%2Fb", "/a%5c..%5cb", "/..;x/y",
		"/a#f", "/%2e%2E/", "/a\x00", "/a?b=%2F", "*", "/caf\xc3\xa9", "/a\\b", "/%", "/a/b//../c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, action := Path(raw)
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
		p2, action2 := Path(p)
		if p2 != p || action2 != Forward {
			t.Fatalf("Path(%q) = %q, then Path(%q) = %q, %v; want idempotent Forward", raw, p, p, p2, action2)
		}
	})
}
