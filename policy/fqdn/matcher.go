package fqdn

import (
	"fmt"
	"strings"
)

// Matcher answers whether a query name matches any of a set of matchName and
// matchPattern selectors. It is immutable after NewMatcher and safe for
// concurrent use.
//
// Names sit in a map keyed by their normal form. Patterns are compiled into a
// trie over labels, read from the right (the top-level domain first): each
// node has literal children in a map, a child for the label "*", children for
// labels that mix '*' with characters, and flags for "a pattern ends here"
// and "a '**.' pattern ends here". A lookup walks the query's labels from the
// right, so its cost depends on the number of labels and wildcard branches
// along the way, not on the number of patterns.
type Matcher struct {
	names    map[string]struct{}
	root     *node
	matchAll bool
}

type node struct {
	lit   map[string]*node
	star  *node
	globs []globChild
	// end: a pattern ends at this node.
	end bool
	// anyLabels: a "**." pattern ends at this node, so one or more further
	// labels of any content match.
	anyLabels bool
}

type globChild struct {
	glob string
	next *node
}

// NewMatcher validates and compiles names (matchName values) and patterns
// (matchPattern values). Either may be empty; a Matcher with neither matches
// nothing.
func NewMatcher(names, patterns []string) (*Matcher, error) {
	m := &Matcher{names: make(map[string]struct{}, len(names)), root: &node{}}
	for _, n := range names {
		if err := ValidateName(n); err != nil {
			return nil, fmt.Errorf("validate matchName %q: %w", n, err)
		}
		m.names[Normalize(n)] = struct{}{}
	}
	for _, p := range patterns {
		if err := ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("validate matchPattern %q: %w", p, err)
		}
		m.addPattern(Normalize(p))
	}
	return m, nil
}

// addPattern inserts a valid pattern in normal form.
func (m *Matcher) addPattern(p string) {
	body := strings.TrimSuffix(p, ".")
	if body == "*" {
		m.matchAll = true
		return
	}
	labels := strings.Split(body, ".")
	n := m.root
	for i := len(labels) - 1; i >= 0; i-- {
		l := labels[i]
		switch {
		case i == 0 && l == "**":
			n.anyLabels = true
			return
		case l == "*":
			if n.star == nil {
				n.star = &node{}
			}
			n = n.star
		case strings.IndexByte(l, '*') >= 0:
			n = n.globChild(l)
		default:
			if n.lit == nil {
				n.lit = make(map[string]*node)
			}
			c, ok := n.lit[l]
			if !ok {
				c = &node{}
				n.lit[l] = c
			}
			n = c
		}
	}
	n.end = true
}

func (n *node) globChild(glob string) *node {
	for _, g := range n.globs {
		if g.glob == glob {
			return g.next
		}
	}
	c := &node{}
	n.globs = append(n.globs, globChild{glob: glob, next: c})
	return c
}

// Match reports whether qname matches any name or pattern of m. qname may
// be in any case, with or without the trailing dot. A qname that fails
// ValidateName matches nothing, not even the pattern "*".
func (m *Matcher) Match(qname string) bool {
	if !validQName(qname) {
		return false
	}
	if m.matchAll {
		return true
	}
	n := Normalize(qname)
	if _, ok := m.names[n]; ok {
		return true
	}
	return m.root.match(n[:len(n)-1])
}

// match reports whether rest, the labels not yet consumed (no trailing
// dot; empty when all are consumed), matches a pattern path from n.
func (n *node) match(rest string) bool {
	if rest == "" {
		return n.end
	}
	if n.anyLabels {
		return true
	}
	i := strings.LastIndexByte(rest, '.')
	label, prefix := rest[i+1:], ""
	if i >= 0 {
		prefix = rest[:i]
	}
	if c, ok := n.lit[label]; ok && c.match(prefix) {
		return true
	}
	if n.star != nil && n.star.match(prefix) {
		return true
	}
	for _, g := range n.globs {
		if matchGlob(g.glob, label) && g.next.match(prefix) {
			return true
		}
	}
	return false
}

// validQName is ValidateName without building an error, for the hot path.
func validQName(s string) bool {
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	if s == "" || len(s) > maxNameLen {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if l := i - start; l == 0 || l > maxLabelLen {
				return false
			}
			start = i + 1
			continue
		}
		if !isNameChar(s[i]) {
			return false
		}
	}
	return true
}
