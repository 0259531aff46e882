package fqdn

import "strings"

// Normalize returns name in the form the matcher compares: ASCII letters
// lower-cased and a trailing dot added if missing ("WWW.Cilium.io" →
// "www.cilium.io."). It does not validate; the empty name becomes ".".
func Normalize(name string) string {
	if isLowerFQDN(name) {
		return name
	}
	var b strings.Builder
	b.Grow(len(name) + 1)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	if !strings.HasSuffix(name, ".") {
		b.WriteByte('.')
	}
	return b.String()
}

// isLowerFQDN reports whether name already is in normal form, so Normalize
// can return it without allocating.
func isLowerFQDN(name string) bool {
	if name == "" || name[len(name)-1] != '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}
