package fqdn

import (
	"strings"
	"testing"
)

// FuzzMatcher checks Matcher against the reference for one selector and one
// query: the selector is tried as a pattern and, when valid, as a name.
func FuzzMatcher(f *testing.F) {
	seeds := [][2]string{
		{"*.cilium.io", "www.cilium.io"},
		{"*.cilium.io", "a.b.cilium.io"},
		{"*.cilium.io", "cilium.io"},
		{"**.cilium.io", "a.b.cilium.io."},
		{"api-*.example.com", "API-v2.example.com"},
		{"a*b*c.x", "abbc.x"},
		{"*", "anything.at.all"},
		{"*", "bad..name"},
		{"cilium.io", "CILIUM.IO."},
		{"www.*.io", "www.a.b.io"},
		{"**.*.io", "a.b.io"},
		{"*.", "x"},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, sel, qname string) {
		if ValidatePattern(sel) == nil {
			m, err := NewMatcher(nil, []string{sel})
			if err != nil {
				t.Fatalf("NewMatcher(pattern %q): %v", sel, err)
			}
			if got, want := m.Match(qname), newRefMatcher(nil, []string{sel}).Match(qname); got != want {
				t.Fatalf("pattern %q: Match(%q) = %v, reference %v", sel, qname, got, want)
			}
		}
		if ValidateName(sel) == nil {
			m, err := NewMatcher([]string{sel}, nil)
			if err != nil {
				t.Fatalf("NewMatcher(name %q): %v", sel, err)
			}
			if got, want := m.Match(qname), newRefMatcher([]string{sel}, nil).Match(qname); got != want {
				t.Fatalf("name %q: Match(%q) = %v, reference %v", sel, qname, got, want)
			}
			// A valid name always matches itself as a name and as a pattern.
			if !m.Match(sel) {
				t.Fatalf("name %q does not match itself", sel)
			}
			if ValidatePattern(sel) != nil {
				t.Fatalf("valid name %q is not a valid pattern", sel)
			}
		}
	})
}

// FuzzValidatePattern checks that validation never panics, that a valid
// pattern compiles and that validity does not depend on case or on the
// trailing dot. Case means ASCII case: DNS names compare ASCII letters only,
// and strings.ToUpper would turn "ı" into "I".
func FuzzValidatePattern(f *testing.F) {
	for _, s := range []string{
		"*.cilium.io", "**.cilium.io", "*", "**", "a.**.b", "***.x", "api-*.Example.COM.",
		"", ".", "..", "a..b", "a b", "a\\.b", strings.Repeat("a", 64), "_srv._tcp.x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := ValidatePattern(p)
		if err == nil {
			if _, nerr := NewMatcher(nil, []string{p}); nerr != nil {
				t.Fatalf("valid pattern %q does not compile: %v", p, nerr)
			}
		}
		if (ValidatePattern(asciiUpper(p)) == nil) != (err == nil) {
			t.Fatalf("validity of %q changes with case", p)
		}
		if !strings.HasSuffix(p, ".") {
			if (ValidatePattern(p+".") == nil) != (err == nil) {
				t.Fatalf("validity of %q changes with a trailing dot", p)
			}
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
