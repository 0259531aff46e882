package fqdn

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func TestMatcher(t *testing.T) {
	tests := []struct {
		name     string
		names    []string
		patterns []string
		match    []string
		noMatch  []string
	}{
		{
			name:    "matchName literal",
			names:   []string{"cilium.io"},
			match:   []string{"cilium.io", "cilium.io.", "CILIUM.io", "Cilium.IO."},
			noMatch: []string{"www.cilium.io", "cilium.io.evil.com", "xcilium.io", "cilium.i", "io", ""},
		},
		{
			name:    "matchName with trailing dot",
			names:   []string{"Cilium.IO."},
			match:   []string{"cilium.io"},
			noMatch: []string{"cilium.io.."},
		},
		{
			name:     "star label",
			patterns: []string{"*.cilium.io"},
			match:    []string{"www.cilium.io", "WWW.CILIUM.IO.", "_srv.cilium.io", "a-b.cilium.io"},
			noMatch:  []string{"cilium.io", "a.b.cilium.io", "www.cilium.io.com", "wwwcilium.io", "www.xcilium.io"},
		},
		{
			name:     "star inside label",
			patterns: []string{"api-*.example.com"},
			match:    []string{"api-v1.example.com", "api-.example.com", "API-X.example.com"},
			noMatch:  []string{"api.example.com", "x.api-v1.example.com", "apiv1.example.com", "api-v1.example.org"},
		},
		{
			name:     "stars inside label",
			patterns: []string{"a*b*c.example.com"},
			match:    []string{"abc.example.com", "axxbyyc.example.com", "abbbc.example.com", "acbc.example.com"},
			noMatch:  []string{"ab.example.com", "acb.example.com", "abcd.example.com"},
		},
		{
			name:     "star in middle label",
			patterns: []string{"www.*.io"},
			match:    []string{"www.cilium.io", "www.x.io"},
			noMatch:  []string{"www.a.b.io", "www.io", "cilium.io"},
		},
		{
			name:     "double star prefix",
			patterns: []string{"**.cilium.io"},
			match:    []string{"www.cilium.io", "a.b.cilium.io", "a.b.c.d.cilium.io."},
			noMatch:  []string{"cilium.io", "cilium.io.evil.com", "wwwcilium.io"},
		},
		{
			name:     "double star then star",
			patterns: []string{"**.*.example.com"},
			match:    []string{"a.b.example.com", "a.b.c.example.com"},
			noMatch:  []string{"b.example.com", "example.com"},
		},
		{
			name:     "match all",
			patterns: []string{"*"},
			match:    []string{"cilium.io", "localhost", "a.b.c.d.e.", "X_Y.Z"},
			noMatch:  []string{"", ".", "a..b", "a\\.b.io", "a b.io", strings.Repeat("a", 64) + ".io"},
		},
		{
			name:     "match all with trailing dot",
			patterns: []string{"*."},
			match:    []string{"cilium.io"},
		},
		{
			name:     "names and patterns together",
			names:    []string{"cilium.io"},
			patterns: []string{"*.cilium.io", "**.example.com", "api-*.foo.bar"},
			match:    []string{"cilium.io", "www.cilium.io", "x.y.example.com", "api-1.foo.bar"},
			noMatch:  []string{"a.b.cilium.io", "example.com", "api.foo.bar", "foo.bar"},
		},
		{
			name:     "overlapping patterns share trie nodes",
			patterns: []string{"*.a.com", "x*.a.com", "www.a.com", "**.b.a.com"},
			match:    []string{"www.a.com", "x.a.com", "y.a.com", "q.b.a.com", "p.q.b.a.com"},
			noMatch:  []string{"a.com", "b.a.com.x", "p.q.c.a.com"},
		},
		{
			name:    "empty matcher",
			noMatch: []string{"cilium.io", "localhost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMatcher(tt.names, tt.patterns)
			if err != nil {
				t.Fatalf("NewMatcher: %v", err)
			}
			ref := newRefMatcher(tt.names, tt.patterns)
			for _, q := range tt.match {
				if !m.Match(q) {
					t.Errorf("Match(%q) = false, want true", q)
				}
				if !ref.Match(q) {
					t.Errorf("reference Match(%q) = false, want true", q)
				}
			}
			for _, q := range tt.noMatch {
				if m.Match(q) {
					t.Errorf("Match(%q) = true, want false", q)
				}
				if ref.Match(q) {
					t.Errorf("reference Match(%q) = true, want false", q)
				}
			}
		})
	}
}

func TestNewMatcherErrors(t *testing.T) {
	tests := []struct {
		name     string
		names    []string
		patterns []string
		want     string
	}{
		{"star in name", []string{"*.cilium.io"}, nil, `validate matchName "*.cilium.io": label 1 "*": '*' is not allowed in matchName; use matchPattern`},
		{"empty name", []string{""}, nil, `validate matchName "": empty name`},
		{"double star not first", nil, []string{"a.**.io"}, `validate matchPattern "a.**.io": label 2: "**" is allowed only as the first label ("**.example.com")`},
		{"bad character", nil, []string{"a/b.io"}, `validate matchPattern "a/b.io": label 1 "a/b": character '/' is not allowed (only letters, digits, '-', '_', '*')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMatcher(tt.names, tt.patterns)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("NewMatcher error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"cilium.io", "cilium.io."},
		{"cilium.io.", "cilium.io."},
		{"WWW.Cilium.IO", "www.cilium.io."},
		{"WWW.Cilium.IO.", "www.cilium.io."},
		{"", "."},
		{"*.Example.COM", "*.example.com."},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Normalize(tt.in); got != tt.want {
				t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMatchGlob(t *testing.T) {
	tests := []struct {
		glob, label string
		want        bool
	}{
		{"*", "", true},
		{"*", "abc", true},
		{"a*", "a", true},
		{"a*", "ba", false},
		{"*a", "ba", true},
		{"*a", "ab", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "acb", false},
		{"a*a*a", "aaaa", true},
		{"a*a*a", "aa", false},
		{"abc", "abc", true},
		{"abc", "abd", false},
	}
	for _, tt := range tests {
		t.Run(tt.glob+"/"+tt.label, func(t *testing.T) {
			if got := matchGlob(tt.glob, tt.label); got != tt.want {
				t.Errorf("matchGlob(%q, %q) = %v, want %v", tt.glob, tt.label, got, tt.want)
			}
		})
	}
}

// randLabel returns a label over a tiny alphabet so that random patterns
// and names collide often.
func randLabel(r *rand.Rand, star bool) string {
	const alphabet = "abA-_"
	n := 1 + r.IntN(3)
	var b strings.Builder
	for range n {
		if star && r.IntN(4) == 0 {
			b.WriteByte('*')
			continue
		}
		b.WriteByte(alphabet[r.IntN(len(alphabet))])
	}
	// Runs of '*' are invalid; squeeze them.
	return strings.ReplaceAll(strings.ReplaceAll(b.String(), "***", "*"), "**", "*")
}

func randName(r *rand.Rand) string {
	n := 1 + r.IntN(4)
	labels := make([]string, n)
	for i := range labels {
		labels[i] = randLabel(r, false)
	}
	s := strings.Join(labels, ".")
	if r.IntN(2) == 0 {
		s += "."
	}
	return s
}

func randPattern(r *rand.Rand) string {
	if r.IntN(50) == 0 {
		return "*"
	}
	n := 1 + r.IntN(3)
	labels := make([]string, 0, n+1)
	if r.IntN(5) == 0 {
		labels = append(labels, "**")
	}
	for range n {
		labels = append(labels, randLabel(r, true))
	}
	return strings.Join(labels, ".")
}

// TestMatcherDifferential compares Matcher with the reference on random
// selector sets and random query names.
func TestMatcherDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	matched, total := 0, 0
	for round := range 300 {
		var names, patterns []string
		for range r.IntN(5) {
			names = append(names, randName(r))
		}
		for range r.IntN(8) {
			patterns = append(patterns, randPattern(r))
		}
		m, err := NewMatcher(names, patterns)
		if err != nil {
			t.Fatalf("round %d: NewMatcher(%q, %q): %v", round, names, patterns, err)
		}
		ref := newRefMatcher(names, patterns)
		for range 200 {
			q := randName(r)
			got, want := m.Match(q), ref.Match(q)
			if got != want {
				t.Fatalf("round %d: names %q patterns %q: Match(%q) = %v, reference %v", round, names, patterns, q, got, want)
			}
			total++
			if got {
				matched++
			}
		}
	}
	// A generator that never (or always) matches would make this test
	// unable to fail.
	if matched < total/100 || matched > total*99/100 {
		t.Fatalf("random inputs matched %d of %d; the generator needs tuning", matched, total)
	}
	t.Logf("matched %d of %d random queries", matched, total)
}
