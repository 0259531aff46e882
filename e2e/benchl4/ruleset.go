package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/moatnet/moat/policy"
)

// Identities is how many remote identities the rules spread over.
const Identities = 1000

// Addresses and identities of the bench world. The 1,000 remote identities
// have one /32 each in 10.239.0.0/22; identity 0 of them is the client pod.
// The server pod sits outside that block.
var (
	serverAddr = netip.MustParseAddr("10.239.100.1")
)

const (
	firstRemoteID policy.ID = 30000
	serverID      policy.ID = 40000

	httpPort   uint16 = 8080 // allowed: wrk → Go HTTP server
	iperfPort  uint16 = 5201 // allowed: iperf3 control + TCP and UDP data
	deniedPort uint16 = 8081 // a listener no rule allows (enforcement check)

	// fillerPortBase is the first port of the rules that are not the
	// allowed flows; a replacement plan shifts them by replaceShift.
	fillerPortBase uint16 = 20000
	replaceShift   uint16 = 10000
)

// remoteAddr is the address of remote identity i (0 <= i < Identities).
func remoteAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 239, byte(i / 250), byte(i%250 + 1)})
}

// remoteID is the identity number of remote identity i.
func remoteID(i int) policy.ID { return firstRemoteID + policy.ID(i) }

// clientAddr is the client pod's address: remote identity 0's.
func clientAddr() netip.Addr { return remoteAddr(0) }

// Rule is one L4 rule of the server's ingress: traffic from remote
// identity Remote (index into the 1,000) with Proto to Port is allowed.
type Rule struct {
	Remote int
	Proto  policy.Protocol
	Port   uint16
}

// allowedRules are the flows the workloads use, client → server.
func allowedRules() []Rule {
	return []Rule{
		{Remote: 0, Proto: policy.ProtoTCP, Port: httpPort},
		{Remote: 0, Proto: policy.ProtoTCP, Port: iperfPort},
		{Remote: 0, Proto: policy.ProtoUDP, Port: iperfPort},
	}
}

// RuleSet returns n rules (n >= 3): n-3 filler rules spread round-robin over
// the 1,000 identities (each identity gets ports base, base+1, …; every
// fifth rule is UDP), followed by the allowed flows. Every rule is a
// distinct (identity, proto, port). shift moves the filler ports, so that
// RuleSet(n, 0) and RuleSet(n, replaceShift) share only the allowed flows.
func RuleSet(n int, shift uint16) ([]Rule, error) {
	allowed := allowedRules()
	if n < len(allowed) {
		return nil, fmt.Errorf("build rule set: %d rules is fewer than the %d allowed flows", n, len(allowed))
	}
	fill := n - len(allowed)
	if fill/Identities >= int(replaceShift) {
		return nil, fmt.Errorf("build rule set: %d rules need more than %d ports per identity", n, replaceShift)
	}
	out := make([]Rule, 0, n)
	for k := range fill {
		proto := policy.ProtoTCP
		if k%5 == 4 {
			proto = policy.ProtoUDP
		}
		out = append(out, Rule{Remote: k % Identities, Proto: proto, Port: fillerPortBase + shift + uint16(k/Identities)})
	}
	return append(out, allowed...), nil
}

// Plan builds the policy.Plan for the rules: the server's ingress is
// enforced with one allow entry per rule; the client's egress is enforced
// with the allowed flows toward the server; the ipcache maps every remote
// identity's address and the server's.
func Plan(rules []Rule) *policy.Plan {
	server := policy.EndpointPlan{
		Namespace: benchNamespace, Name: serverName, Identity: serverID,
		Addresses: []netip.Addr{serverAddr},
		Ingress:   policy.DirectionPlan{Enforced: true, Entries: make([]policy.Entry, 0, len(rules))},
	}
	for _, r := range rules {
		server.Ingress.Entries = append(server.Ingress.Entries, allowEntry(remoteID(r.Remote), r.Proto, r.Port))
	}
	client := policy.EndpointPlan{
		Namespace: benchNamespace, Name: clientName, Identity: remoteID(0),
		Addresses: []netip.Addr{clientAddr()},
		Egress:    policy.DirectionPlan{Enforced: true},
	}
	for _, r := range allowedRules() {
		client.Egress.Entries = append(client.Egress.Entries, allowEntry(serverID, r.Proto, r.Port))
	}
	plan := &policy.Plan{Endpoints: []policy.EndpointPlan{client, server}}
	for i := range Identities {
		plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(remoteAddr(i), 32), Identity: remoteID(i)})
	}
	plan.IPCache = append(plan.IPCache, policy.IPCacheEntry{Prefix: netip.PrefixFrom(serverAddr, 32), Identity: serverID})
	return plan
}

func allowEntry(id policy.ID, proto policy.Protocol, port uint16) policy.Entry {
	return policy.Entry{
		L4Key:   policy.L4Key{Identity: id, Proto: proto, Ports: policy.PortRange{From: port, To: port}},
		Verdict: policy.VerdictAllow,
	}
}

// IptablesRestore renders the rules as iptables-restore input (used with
// --noflush) for the FORWARD chain of the scratch host netns, which carries
// only the bench's traffic. It is written the way a careful operator writes
// it: established and related traffic first, one ACCEPT per (source, proto,
// dport) in rule order (the allowed flows come last, the worst case for
// linear matching), then DROP.
func IptablesRestore(rules []Rule) string {
	var b strings.Builder
	b.WriteString("*filter\n")
	b.WriteString("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	dst := serverAddr.String() + "/32"
	for _, r := range rules {
		p := protoName(r.Proto)
		fmt.Fprintf(&b, "-A FORWARD -s %s/32 -d %s -p %s -m %s --dport %d -j ACCEPT\n", remoteAddr(r.Remote), dst, p, p, r.Port)
	}
	b.WriteString("-A FORWARD -j DROP\n")
	b.WriteString("COMMIT\n")
	return b.String()
}

func protoName(p policy.Protocol) string {
	if p == policy.ProtoUDP {
		return "udp"
	}
	return "tcp"
}
