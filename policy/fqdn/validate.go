package fqdn

import (
	"errors"
	"fmt"
	"strings"
)

const (
	// maxLabelLen is the longest DNS label (RFC 1035 section 2.3.4).
	maxLabelLen = 63
	// maxNameLen is the longest name in presentation form without the
	// trailing dot (255 octets on the wire).
	maxNameLen = 253
)

// ValidateName reports why s is not an acceptable matchName, or nil. A name
// is one or more labels separated by dots, with an optional trailing dot;
// each label has 1 to 63 characters out of ASCII letters, digits, '-' and
// '_' (underscores appear in service names such as "_http._tcp"); the whole
// name has at most 253 characters without the trailing dot.
func ValidateName(s string) error {
	return validate(s, false)
}

// ValidatePattern reports why s is not an acceptable matchPattern, or nil.
// A pattern follows the rules of ValidateName, with '*' also allowed inside
// labels, plus: the pattern "*" alone (every name); a first label of exactly
// "**" followed by at least one more label ("**.example.com"). A "**"
// anywhere else, or any other run of consecutive '*', is refused because its
// meaning would be unclear.
func ValidatePattern(s string) error {
	return validate(s, true)
}

func validate(s string, pattern bool) error {
	if s == "" {
		return errors.New("empty name")
	}
	body := strings.TrimSuffix(s, ".")
	if body == "" {
		return errors.New("name is only the root \".\"")
	}
	if len(body) > maxNameLen {
		return fmt.Errorf("name has %d characters, more than %d", len(body), maxNameLen)
	}
	labels := strings.Split(body, ".")
	for i, l := range labels {
		if l == "" {
			return fmt.Errorf("label %d is empty (leading dot or \"..\")", i+1)
		}
		if len(l) > maxLabelLen {
			return fmt.Errorf("label %d %q has %d characters, more than %d", i+1, l, len(l), maxLabelLen)
		}
		if pattern && l == "**" {
			if i != 0 {
				return fmt.Errorf("label %d: \"**\" is allowed only as the first label (\"**.example.com\")", i+1)
			}
			if len(labels) == 1 {
				return errors.New("\"**\" must be followed by at least one label (\"**.example.com\"); use \"*\" to match every name")
			}
			continue
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case isNameChar(c):
			case c == '*' && pattern:
				if j+1 < len(l) && l[j+1] == '*' {
					return fmt.Errorf("label %d %q: consecutive '*' are allowed only as a whole first label \"**\"", i+1, l)
				}
			case c == '*':
				return fmt.Errorf("label %d %q: '*' is not allowed in matchName; use matchPattern", i+1, l)
			default:
				allowed := "letters, digits, '-', '_'"
				if pattern {
					allowed += ", '*'"
				}
				return fmt.Errorf("label %d %q: character %q is not allowed (only %s)", i+1, l, c, allowed)
			}
		}
	}
	return nil
}

func isNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
