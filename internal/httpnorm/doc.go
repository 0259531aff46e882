// Package httpnorm predicts what Envoy's HTTP connection manager does to a
// request target before any HTTP filter (RBAC, moat's own) sees it, when the
// connection manager is configured the way moat configures it:
//
//	normalize_path: true
//	merge_slashes: true
//	path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
//	headers_with_underscores_action: REJECT_REQUEST
//
// Policy code uses it to reason about the path a rule will be matched
// against (tests, explain output, the Go fallback proxy), so that a rule such
// as path "/public" cannot be bypassed with "/x/../public", "//public" or
// "/%70ublic", and a rule cannot be evaded with "/private%2Fkey".
//
// The package is pure and stdlib-only: it never touches the network, never
// logs and keeps no state. It must never be more permissive than Envoy: where
// Envoy's exact behaviour is uncertain, it rejects.
package httpnorm
