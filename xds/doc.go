// Package xds serves Envoy resources to proxies over the aggregated
// discovery service (ADS), both state-of-the-world and delta, and reports
// what each proxy did with them.
//
// It owns the gRPC server (a unix socket with mode 0660 and optionally a
// loopback TCP address), one go-control-plane snapshot per node, and the
// ACK/NACK bookkeeping per node, resource type and version. The agent uses
// WaitForACK so that a redirect into a proxy listener reaches the datapath
// only after that proxy has accepted the listener and cluster which will
// receive the traffic; a node that never subscribed is never waited for.
//
// The package serves resources; it must never know policies: it never
// imports github.com/moatnet/moat/policy, and it never builds or inspects
// Envoy resources beyond hashing them to tell whether a type changed.
package xds
