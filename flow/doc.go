// Package flow owns moat's flow records: the Hubble-shaped Flow type, a
// bounded ring buffer with filtered followers (what `moat observe` reads),
// Hubble-compatible Prometheus metrics handlers configured with Hubble's
// option syntax, and the Envoy gRPC access-log service that turns proxy
// access-log entries into L7 HTTP flows.
//
// Flow consumes its inputs through small types it defines itself (Flow
// values, the Enricher interface); it must never import datapath, envoy,
// xds or dnsproxy, and it never touches the kernel or the network except for
// serving the access-log gRPC service on a server the caller owns.
package flow
