package envoy

import (
	"strings"
	"testing"
)

func TestLineDiff(t *testing.T) {
	lines := func(s string) []string { return strings.Split(s, " ") }
	for _, tc := range []struct {
		name, a, b string
		ctx        int
		want       string
	}{
		{name: "equal", a: "a b c", b: "a b c", ctx: 1, want: ""},
		{name: "change in the middle", a: "a b c d e", b: "a b X d e", ctx: 1, want: "  …\n  b\n- c\n+ X\n  d\n  …\n"},
		{name: "insert at end", a: "a b", b: "a b c", ctx: 3, want: "  a\n  b\n+ c\n"},
		{name: "delete at start", a: "a b c", b: "b c", ctx: 0, want: "- a\n  …\n"},
		{name: "two hunks", a: "a b c d e f g h", b: "a B c d e f g H", ctx: 1, want: "  a\n- b\n+ B\n  c\n  …\n  g\n- h\n+ H\n"},
		{name: "moved line", a: "x a b", b: "a b x", ctx: 0, want: "- x\n  …\n+ x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lineDiff(lines(tc.a), lines(tc.b), tc.ctx); got != tc.want {
				t.Errorf("lineDiff(%q, %q) =\n%s\nwant\n%s", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

// FuzzLineDiff checks that applying the diff's "-" and "+" lines to a
// gives b, on inputs without context elision (ctx large).
func FuzzLineDiff(f *testing.F) {
	f.Add("a b c", "a x c")
	f.Add("", "a")
	f.Add("a a a", "a")
	f.Fuzz(func(t *testing.T, a, b string) {
		la, lb := strings.Fields(a), strings.Fields(b)
		d := lineDiff(la, lb, len(la)+len(lb))
		var gotA, gotB []string
		for line := range strings.Lines(d) {
			line = strings.TrimSuffix(line, "\n")
			if len(line) < 2 {
				t.Fatalf("short diff line %q", line)
			}
			switch text := line[2:]; line[0] {
			case ' ':
				gotA, gotB = append(gotA, text), append(gotB, text)
			case '-':
				gotA = append(gotA, text)
			case '+':
				gotB = append(gotB, text)
			}
		}
		if d == "" {
			gotA, gotB = la, lb
		}
		if strings.Join(gotA, " ") != strings.Join(la, " ") || strings.Join(gotB, " ") != strings.Join(lb, " ") {
			t.Errorf("diff of %q and %q does not rebuild them:\n%s", a, b, d)
		}
		if (d == "") != (strings.Join(la, " ") == strings.Join(lb, " ")) {
			t.Errorf("empty diff %v for %q vs %q", d == "", a, b)
		}
	})
}
