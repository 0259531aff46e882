// Package adsclient is a small, real xDS client of the aggregated discovery
// service (ADS), state-of-the-world and delta, for tests and benchmarks: it
// dials a unix socket or host:port, opens a stream as one node, subscribes
// to resource types (wildcard or by name), receives responses and answers
// each with an ACK or a NACK, the way Envoy does (the node only in the
// first request, the last accepted version in a SotW NACK).
//
// It is what the xds tests, the push benchmarks and the e2e tests drive the
// xds server with, and the ADS client of the embedded proxy (l7proxy), so
// that all of them speak to it over real gRPC streams through one tested
// implementation.
//
// It must stay a protocol client and nothing more: it imports only gRPC,
// go-control-plane's and protobuf's generated types and the standard
// library, never another moat package, and it never interprets the
// resources it receives beyond reading their names.
package adsclient
