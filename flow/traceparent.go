package flow

import "strings"

// TraceIDFromTraceparent returns the trace id of a W3C `traceparent` header
// ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"), or "" when the
// header is absent or malformed, or the id is all zeros.
func TraceIDFromTraceparent(h string) string {
	h = strings.TrimSpace(h)
	parts := strings.Split(h, "-")
	if len(parts) < 4 {
		return ""
	}
	version, traceID, parentID, flags := parts[0], parts[1], parts[2], parts[3]
	if len(version) != 2 || !isLowerHex(version) || version == "ff" {
		return ""
	}
	if version == "00" && len(parts) != 4 {
		return ""
	}
	if len(traceID) != 32 || !isLowerHex(traceID) || strings.Trim(traceID, "0") == "" {
		return ""
	}
	if len(parentID) != 16 || !isLowerHex(parentID) || len(flags) != 2 || !isLowerHex(flags) {
		return ""
	}
	return traceID
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
