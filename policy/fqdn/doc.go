// Package fqdn owns DNS name matching for toFQDNs and DNS rules: validating
// matchName and matchPattern values, normalising names, and a Matcher that
// answers "does this query name match any of these selectors" quickly enough
// to sit on the DNS proxy's hot path.
//
// Semantics (CiliumNetworkPolicy-compatible):
//
//   - matchName is a literal, compared case-insensitively, with the trailing
//     dot implied: "cilium.io", "Cilium.IO." and "cilium.io." are the same name.
//   - In matchPattern, '*' matches zero or more characters inside one label:
//     "*.cilium.io" matches "www.cilium.io" but neither "cilium.io" nor
//     "a.b.cilium.io"; "api-*.example.com" matches "api-v2.example.com".
//   - A leading "**." matches one or more whole labels: "**.cilium.io" matches
//     "www.cilium.io" and "a.b.cilium.io", not "cilium.io".
//   - A pattern that is only "*" matches every valid name.
//   - A query name that is not a valid DNS name in the sense of ValidateName
//     (for example one with escaped bytes such as "a\\.b") matches nothing.
//
// The package is pure and stdlib-only: no network, no logging, no state
// outside the values it returns. It must never widen a selector: when in
// doubt, a name does not match.
package fqdn
