// Package dnsproxy owns moat's transparent DNS proxy and its FQDN cache.
//
// The datapath redirects an endpoint's DNS traffic (UDP and TCP to a port
// with `rules.dns`) to the proxy's listeners. For each query the proxy
// identifies the source endpoint (Endpoints), recovers the original
// destination (IP_RECVORIGDSTADDR for UDP, the accepted socket's local
// address for TCP), judges the question against the endpoint's current DNS
// rule sets exactly as `moat policy trace --dns-query` does, and then either
// answers REFUSED (or NXDOMAIN) itself or forwards the query to the original
// server from a fresh socket that carries the source identity's mark, with a
// fresh random transaction ID and source port. The answer is checked against
// the question (ID, source, question, CNAME chain), the addresses of names
// that toFQDNs selectors select are learned into the Cache and handed to the
// OnLearn hook before the answer is released (bounded hold), and the answer
// goes back to the endpoint from the original server's address.
//
// Every malformed or unexpected message gets a defined result (FORMERR,
// REFUSED, NOTIMP, SERVFAIL or drop), counted by reason in
// moat_dnsproxy_rejected_total; nothing the policy did not ask for is ever
// learned. Each exchange is reported as Hubble-shaped flow records through
// Config.OnFlow, so the hubble_dns_* metrics live in package flow only.
//
// The package never touches BPF maps or routes: the agent connects it to the
// datapath through the small interfaces it defines (Endpoints, Remotes,
// InUse, LearnFunc, the Mark function).
//
// # Wiring (what the agent and the datapath provide)
//
//   - Config{Listen: 127.0.0.1:P and [::1]:P, Transparent: true}: one UDP
//     and one TCP IP_TRANSPARENT socket per address (Addrs reports them;
//     P is the port the datapath's DNS redirect entries carry; loopback so
//     no endpoint can address it, if the datapath e2e confirms that
//     bpf_sk_assign delivers to loopback-bound sockets, else the wildcard
//     address, which destination_is_proxy below still covers). The tc
//     program hands redirected port-53 packets to these sockets with
//     bpf_sk_assign and the to-proxy mark (policy.ToProxyMark(P)); the
//     fwmark 0x200/0xf00 rule delivers them locally.
//   - Endpoints (source address → local endpoint) and Remotes (server
//     address → identity, as the datapath resolves it).
//   - Mark: policy.ProxyMark(policy.Egress, id). Upstream packets leave
//     with mark&0xF00 == 0xB00 and the source identity, so the datapath
//     applies the endpoint's L3/L4 egress policy to the server as if the
//     endpoint sent them, and never redirects them again.
//   - SetPolicy(PolicyFromPlan(plan)) on every Plan, before the datapath
//     writes redirect entries that need it.
//   - OnLearn: allocate local FQDN identities (policy.LocalAllocator) and
//     write the ipcache, returning once the datapath has them; OnRelease
//     and Cache().Collect to release them; InUse from conntrack.
//   - OnFlow: flow.Enrich then the ring and flow.Metrics.Process.
//   - State/SaveState on a timer and at shutdown, LoadState and Restore
//     before Run on start.
//
// The proxy refuses (destination_is_proxy) a query addressed to its own
// listening port, so an endpoint that reaches the port directly instead of
// through the redirect gets nothing forwarded.
package dnsproxy
