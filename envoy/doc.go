// Package envoy owns the translation of a policy.Plan into Envoy xDS
// resources (listeners, routes, clusters) and the Envoy bootstrap that points
// a proxy at the agent's xDS and access-log sockets.
//
// Translation is pure and deterministic: the same Plan and Config give the
// same resources, byte for byte once serialised, and every resource passes
// go-control-plane's ValidateAll. Translation never opens a socket, never
// touches the kernel and never talks to an xDS client; the xds package
// serves what Translate returns, and the datapath decodes the marks that
// policy/marks.go defines. The thin I/O layer around it is admin*.go (a
// read-only client of Envoy's admin API and the intended-vs-applied
// comparison that `moat envoy` uses) and supervisor.go (runs an Envoy
// process).
//
// How the Plan maps onto stock Envoy:
//
//   - One IP_TRANSPARENT listener per redirect direction and proxy port
//     (moat/egress-http/15001, moat/ingress-http/15002). The datapath hands
//     packets to it with bpf_sk_assign, so the accepted socket's local
//     address already is the original destination: no original_dst listener
//     filter (that filter reads SO_ORIGINAL_DST, which only NAT redirects
//     set) and no use_original_dst.
//
//   - One filter chain per local endpoint that has HTTP rule sets in that
//     direction, matched on the endpoint's addresses: source addresses for
//     egress, destination addresses for ingress. A connection that matches no
//     chain is closed (fail closed). Envoy's filter_chain_match has no port
//     ranges, so the rule set's port range is enforced by the RBAC policies
//     (destination_port / destination_port_range) instead.
//
//   - Each chain's HTTP connection manager carries the safe defaults, the
//     gRPC access log to the agent, an RBAC filter built from the endpoint's
//     HTTPRuleSets, and RDS for the route to the ORIGINAL_DST cluster.
//
//   - Remote identities become IP sets that reproduce the datapath's
//     ipcache longest-prefix match exactly (see ipset.go).
//
//   - Upstream sockets carry the identity mark of policy/marks.go through a
//     per-cluster SO_MARK socket option, so there is one ORIGINAL_DST cluster
//     per egress source identity (see cluster.go for ingress).
//
//   - A request no rule allows gets 403 with body DeniedBody, through a
//     local_reply_config mapper on the HTTP connection manager.
//
//   - The ingress listener's upstream connections keep the client's address
//     (original_src listener filter, with the ingress mark); the datapath
//     hands the server's replies back to the proxy (bpf/proxy.h).
//
// Known limit: the egress proxy's upstream connection leaves from the node's
// address (original_src would apply to every destination of the listener,
// and a remote destination's replies arrive on a host interface that has no
// return program). When its destination is a local endpoint whose ingress
// is also redirected, the ingress proxy's RBAC sees the node address, not
// the client's; the datapath sees the right identity in the mark. The
// embedded l7proxy keeps the client's address towards local endpoints.
package envoy
