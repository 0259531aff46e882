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
package dnsproxy
