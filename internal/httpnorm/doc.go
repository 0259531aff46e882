// Package httpnorm decides what the HTTP connection manager does to a
// request target before any HTTP filter (RBAC, moat's own) sees it. Both the
// embedded proxy (l7proxy) and `moat policy trace` call it, so that trace
// answers exactly what the proxy answers.
//
// Two modes exist. ModeEnvoy predicts Envoy configured the way moat
// configures it for Envoy-exact behaviour:
//
//	normalize_path: true
//	merge_slashes: true
//	path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
//	headers_with_underscores_action: REJECT_REQUEST
//
// ModeStrict (the default) is stricter than Envoy: it rejects (400) every
// target whose meaning is ambiguous across common back ends (path
// parameters on dot segments, encoded dot segments, empty segments next to
// dot segments, escaped or raw slashes and backslashes, double encoding,
// overlong UTF-8). In both modes a rule such as path "/public" cannot be
// bypassed with "/x/../public", "//public" or "/%70ublic".
//
// The package is pure and stdlib-only: it never touches the network, never
// logs and keeps no state. It must never be more permissive than Envoy: where
// Envoy's exact behaviour is uncertain, it rejects.
package httpnorm
