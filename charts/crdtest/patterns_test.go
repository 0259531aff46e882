package crdtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/policy"
)

// schemaPatterns returns the `pattern` of every schema property named
// field (at any depth) of the NetworkPolicy CRD; the CRD is generated, so
// the test checks what the apiserver really runs.
func schemaPatterns(t *testing.T, field string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "charts/moat/crds/moat.io_networkpolicies.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd any
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	var walk func(name string, v any)
	walk = func(name string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if p, ok := x["pattern"].(string); ok && name == field && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
			for k, c := range x {
				if k == "properties" {
					for pk, pv := range c.(map[string]any) {
						walk(pk, pv)
					}
					continue
				}
				walk(name, c)
			}
		case []any:
			for _, c := range x {
				walk(name, c)
			}
		}
	}
	walk("", crd)
	if len(out) != 1 {
		t.Fatalf("field %s: %d distinct patterns in the CRD, want 1: %q", field, len(out), out)
	}
	return out
}

// accepts reports whether moat accepts a policy whose body is built from
// value by tmpl (a fmt format with one %q).
func accepts(tmpl, value string) bool {
	doc := fmt.Sprintf("apiVersion: moat.io/v1alpha1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  endpointSelector: {}\n"+tmpl, value)
	_, err := policy.ParseBytes("p.yaml", []byte(doc))
	return err == nil
}

// candidates returns n random strings over alphabet, up to maxLen long,
// plus the fixed ones.
func candidates(r *rand.Rand, n, maxLen int, alphabet string, fixed ...string) []string {
	out := append([]string(nil), fixed...)
	for range n {
		var b strings.Builder
		for range r.IntN(maxLen + 1) {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		out = append(out, b.String())
	}
	return out
}

// structuredIPs returns n addresses and prefixes assembled from valid and
// invalid parts (octets, hex groups, prefix lengths), so that many of them
// are valid and the rest are near misses.
func structuredIPs(r *rand.Rand, n int) []string {
	octets := []string{"0", "1", "9", "10", "25", "99", "100", "199", "200", "249", "250", "255", "256", "01", "00", "300", ""}
	groups := []string{"0", "1", "a", "ff", "ffff", "FFFF", "db8", "2001", "12345", "g", ""}
	lens := []string{"", "/0", "/8", "/9", "/10", "/24", "/30", "/32", "/33", "/08", "/64", "/128", "/129", "/-1", "/"}
	pick := func(l []string) string { return l[r.IntN(len(l))] }
	out := make([]string, 0, n)
	for range n {
		var s string
		switch r.IntN(3) {
		case 0:
			s = pick(octets) + "." + pick(octets) + "." + pick(octets) + "." + pick(octets)
		case 1:
			var g []string
			for range 1 + r.IntN(8) {
				g = append(g, pick(groups))
			}
			s = strings.Join(g, ":")
			if r.IntN(2) == 0 {
				s = strings.Replace(s, ":", "::", 1)
			}
		default:
			s = "::ffff:" + pick(octets) + "." + pick(octets) + "." + pick(octets) + "." + pick(octets)
		}
		out = append(out, s+pick(lens))
	}
	return out
}

// TestPatternsNeverRejectWhatMoatAccepts compares the CRD's patterns with
// moat's validation on fixed edge cases and random strings: whatever moat
// accepts, the pattern must match (the schema never rejects a valid
// policy). Where the pattern claims to be exact (ports, IPv4 CIDRs, header
// names), a match must also mean moat accepts.
func TestPatternsNeverRejectWhatMoatAccepts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		field  string
		tmpl   string
		values []string
		exact  func(s string) bool // the pattern is exact for these values
	}{
		{
			field: "port",
			tmpl:  "  ingress: [{toPorts: [{ports: [{port: %q}]}]}]",
			values: candidates(r, 5000, 7, "0123456789+-a ",
				"", "0", "-0", "+0", "00", "80", "+80", "0080", "65535", "65536", "99999", "-1", "+-1", "1e3", " 80", "0x50",
				"000000000000000000000000000080"),
			exact: func(string) bool { return true },
		},
		{
			field: "cidr",
			tmpl:  "  ingress: [{fromCIDRSet: [{cidr: %q}]}]",
			values: slices.Concat(structuredIPs(r, 3000), candidates(r, 3000, 18, "0123456789./:", "1.2.3.4", "1.2.3.4/0", "1.2.3.4/32", "1.2.3.4/33", "1.2.3.4/08",
				"01.2.3.4", "1.2.3.256", "255.255.255.255/32", "::", "::/0", "::1/128", "::1/129", "::ffff:1.2.3.4", "fe80::1%eth0",
				"2001:db8::/32", "1:2:3:4:5:6:7:8", "1::2::3", "::ffff:1.2.3.4/104"),
				candidates(r, 2000, 12, "0123456789abcdefABCDEF:./")),
			exact: func(s string) bool { return !strings.Contains(s, ":") },
		},
		{
			field: "name",
			tmpl:  "  ingress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{headerMatches: [{name: %q}]}]}}]}]",
			values: candidates(r, 3000, 4, "aZ09-_!#$%&'*+.^`|~ :\"(),/;<=>?@[\\]{}",
				"", "X-Token", "x y", "a:b"),
			exact: func(string) bool { return true },
		},
	}
	for _, tc := range cases {
		t.Run(tc.field, func(t *testing.T) {
			re := regexp.MustCompile(schemaPatterns(t, tc.field)[0])
			matched, acceptedN := 0, 0
			for _, v := range tc.values {
				ok := accepts(tc.tmpl, v)
				m := re.MatchString(v)
				if ok {
					acceptedN++
				}
				if m {
					matched++
				}
				if ok && !m {
					t.Errorf("moat accepts %s %q but the CRD pattern rejects it", tc.field, v)
				}
				if m && !ok && tc.exact(v) {
					t.Errorf("the CRD pattern accepts %s %q but moat rejects it (the pattern claims to be exact here)", tc.field, v)
				}
			}
			// Positive control: the random inputs hit both sides.
			if acceptedN < 20 || matched == len(tc.values) {
				t.Errorf("weak sample: %d of %d accepted by moat, %d matched", acceptedN, len(tc.values), matched)
			}
			t.Logf("%d values: %d accepted by moat, %d matched by the pattern", len(tc.values), acceptedN, matched)
		})
	}
}
