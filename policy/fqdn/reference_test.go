package fqdn

import (
	"regexp"
	"strings"
)

// refMatcher is the slow, obviously-correct matcher the fast one is checked
// against: every selector becomes one anchored regular expression, tried one
// after another.
type refMatcher struct {
	res []*regexp.Regexp
}

// newRefMatcher assumes valid names and patterns.
func newRefMatcher(names, patterns []string) *refMatcher {
	r := &refMatcher{}
	for _, n := range names {
		r.res = append(r.res, regexp.MustCompile("^"+regexp.QuoteMeta(strings.ToLower(strings.TrimSuffix(n, ".")))+`\.$`))
	}
	for _, p := range patterns {
		r.res = append(r.res, regexp.MustCompile(patternRegexp(strings.ToLower(p))))
	}
	return r
}

// patternRegexp translates a valid pattern, label by label.
func patternRegexp(p string) string {
	body := strings.TrimSuffix(p, ".")
	if body == "*" {
		return `^.*$`
	}
	var b strings.Builder
	b.WriteString("^")
	for i, l := range strings.Split(body, ".") {
		if i == 0 && l == "**" {
			b.WriteString(`(?:[^.]+\.)+`)
			continue
		}
		parts := strings.Split(l, "*")
		for j, part := range parts {
			if j > 0 {
				b.WriteString(`[^.]*`)
			}
			b.WriteString(regexp.QuoteMeta(part))
		}
		b.WriteString(`\.`)
	}
	b.WriteString("$")
	return b.String()
}

func (r *refMatcher) Match(qname string) bool {
	if ValidateName(qname) != nil {
		return false
	}
	n := strings.ToLower(qname)
	if !strings.HasSuffix(n, ".") {
		n += "."
	}
	for _, re := range r.res {
		if re.MatchString(n) {
			return true
		}
	}
	return false
}
