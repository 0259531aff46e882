package fqdn

// matchGlob reports whether label matches glob, where '*' in glob matches
// zero or more bytes and every other byte matches itself. Neither argument
// contains a dot. It runs in O(len(glob)·len(label)) at worst and without
// allocating: on a mismatch it retries from the last '*', one byte further.
func matchGlob(glob, label string) bool {
	g, l := 0, 0
	star, mark := -1, 0
	for l < len(label) {
		switch {
		case g < len(glob) && glob[g] == '*':
			star, mark = g, l
			g++
		case g < len(glob) && glob[g] == label[l]:
			g++
			l++
		case star >= 0:
			mark++
			g, l = star+1, mark
		default:
			return false
		}
	}
	for g < len(glob) && glob[g] == '*' {
		g++
	}
	return g == len(glob)
}
