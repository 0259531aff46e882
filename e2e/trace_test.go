package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/moatnet/moat/policy"
)

// traceEndpoints are the endpoints of the trace table. The node address is
// the endpoints' gateway, the source of traffic the host sends to a pod, so
// that it resolves to the host identity.
const traceEndpoints = `node:
  name: e2e-node
  addresses: [169.254.42.1]
endpoints:
- name: a
  labels: {app: a, role: client}
  ipv4: 10.210.0.1
- name: b
  labels: {app: b, role: server}
  ipv4: 10.210.0.2
- name: c
  labels: {app: c, role: client}
  ipv4: 10.210.0.3
`

// Every peer of the trace table serves these ports.
var (
	traceTCPPorts = []uint16{8080, 8081, 9005, 9090}
	traceUDPPorts = []uint16{5000, 5001}
)

// trafficCase is one cell of the table: traffic from one peer to another,
// the verdict the policy set should give it (want) — which both
// `moat policy trace` and the real packets must agree with.
type trafficCase struct {
	from, to string
	proto    proto
	port     uint16 // ICMP: ignored (echo request)
	want     bool   // allowed
}

// policySet is one version of the policies and the traffic it decides.
type policySet struct {
	name   string
	policy string
	cases  []trafficCase
}

const cnp = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"

func tcp(from, to string, port uint16, want bool) trafficCase {
	return trafficCase{from: from, to: to, proto: protoTCP, port: port, want: want}
}

func udp(from, to string, port uint16, want bool) trafficCase {
	return trafficCase{from: from, to: to, proto: protoUDP, port: port, want: want}
}

func icmp(from, to string, want bool) trafficCase {
	return trafficCase{from: from, to: to, proto: protoICMP, port: icmpEcho, want: want}
}

var traceTable = []policySet{
	{
		name:   "no policy allows all",
		policy: "# no policy\n",
		cases: []trafficCase{
			tcp("a", "b", 8080, true), udp("a", "b", 5000, true), icmp("a", "b", true),
			tcp("w1", "b", 8080, true), tcp("host", "b", 8080, true), tcp("b", "w2", 8081, true),
		},
	},
	{
		name: "L3 selectors, L4 ports and port ranges",
		policy: cnp + `metadata: {name: b-ingress}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts:
    - ports:
      - {port: "8080", protocol: TCP}
      - {port: "9000", endPort: 9010, protocol: TCP}
      - {port: "5000", protocol: UDP}
  - fromEndpoints: [{matchLabels: {role: client}}]
    toPorts:
    - ports: [{port: "8081", protocol: TCP}]
`,
		cases: []trafficCase{
			tcp("a", "b", 8080, true), tcp("a", "b", 9005, true), tcp("a", "b", 9090, false),
			tcp("c", "b", 8080, false), tcp("c", "b", 8081, true), tcp("c", "b", 9005, false),
			udp("a", "b", 5000, true), udp("a", "b", 5001, false), udp("c", "b", 5000, false),
			icmp("a", "b", false), tcp("b", "a", 8080, true), tcp("w1", "b", 8080, false),
			tcp("host", "b", 8081, false),
		},
	},
	{
		name: "CIDR with except",
		policy: cnp + `metadata: {name: a-egress}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toCIDRSet:
    - cidr: 192.0.2.0/24
      except: [192.0.2.128/25]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
  - toEndpoints: [{matchLabels: {app: b}}]
---
` + cnp + `metadata: {name: b-from-cidr}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromCIDRSet:
    - cidr: 192.0.2.0/24
      except: [192.0.2.128/25]
    toPorts:
    - ports: [{port: "5000", protocol: UDP}]
`,
		cases: []trafficCase{
			tcp("a", "w1", 8080, true), tcp("a", "w2", 8080, false), tcp("a", "w1", 8081, false),
			udp("a", "w1", 5000, false), tcp("a", "b", 8081, false), tcp("a", "c", 8080, false),
			udp("w1", "b", 5000, true), udp("w2", "b", 5000, false), tcp("w1", "b", 8080, false),
			tcp("c", "w2", 8080, true),
		},
	},
	{
		name: "entities world and host",
		policy: cnp + `metadata: {name: b-entities}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
  - fromEntities: [host]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
---
` + cnp + `metadata: {name: a-entities}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEntities: [world]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
  - toEntities: [host]
`,
		cases: []trafficCase{
			tcp("w1", "b", 8080, true), tcp("w2", "b", 8080, true), tcp("w1", "b", 8081, false),
			tcp("host", "b", 8081, true), tcp("host", "b", 8080, false), tcp("a", "b", 8080, false),
			tcp("a", "w1", 8081, true), tcp("a", "w1", 8080, false), icmp("a", "host", true),
			icmp("a", "w1", false),
		},
	},
	{
		name: "deny wins over allow",
		policy: cnp + `metadata: {name: b-deny}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
  - fromEntities: [world]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: a}}]
    toPorts: [{ports: [{port: "8081", protocol: TCP}]}]
  - fromCIDRSet: [{cidr: 192.0.2.128/25}]
`,
		cases: []trafficCase{
			tcp("a", "b", 8080, true), tcp("a", "b", 8081, false), udp("a", "b", 5000, true),
			icmp("a", "b", true), tcp("c", "b", 8080, false), tcp("w1", "b", 8081, true),
			tcp("w2", "b", 8080, false),
		},
	},
	{
		name: "default deny per direction",
		policy: cnp + `metadata: {name: a-egress-only}
spec:
  endpointSelector: {matchLabels: {app: a}}
  egress:
  - toEndpoints: [{matchLabels: {app: b}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
---
` + cnp + `metadata: {name: c-ingress-only}
spec:
  endpointSelector: {matchLabels: {app: c}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: b}}]
`,
		cases: []trafficCase{
			tcp("a", "b", 8080, true), tcp("a", "b", 8081, false), tcp("a", "c", 8080, false),
			udp("a", "b", 5000, false), icmp("a", "b", false), tcp("b", "a", 8080, true),
			tcp("w1", "a", 8080, true), tcp("b", "c", 8080, true), tcp("w1", "c", 8080, false),
			tcp("c", "w1", 8080, true), tcp("c", "b", 8081, true),
		},
	},
	{
		name: "ICMP echo",
		policy: cnp + `metadata: {name: b-icmp}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    icmps: [{fields: [{type: 8, family: IPv4}]}]
  - fromEndpoints: [{matchLabels: {app: c}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
`,
		cases: []trafficCase{
			icmp("a", "b", true), icmp("c", "b", false), tcp("a", "b", 8080, false),
			tcp("c", "b", 8080, true), icmp("w1", "b", false), icmp("host", "b", false),
		},
	},
	{
		// ICMP type 0 is echo reply, one type: it must not read as "every
		// type" (the way port 0 means every port), so an echo request from
		// a is dropped while c's echo requests pass.
		name: "ICMP echo reply only",
		policy: cnp + `metadata: {name: b-icmp-reply}
spec:
  endpointSelector: {matchLabels: {app: b}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: a}}]
    icmps: [{fields: [{type: EchoReply, family: IPv4}]}]
  - fromEndpoints: [{matchLabels: {app: c}}]
    icmps: [{fields: [{type: 0, family: IPv4}, {type: EchoRequest, family: IPv4}]}]
`,
		cases: []trafficCase{
			icmp("a", "b", false), icmp("c", "b", true), tcp("a", "b", 8080, false),
		},
	},
}

// deniedTimeout is how long a probe waits before it calls a packet dropped.
// Probes of one policy set run concurrently, so it is paid about once per
// set.
const deniedTimeout = time.Second

// allowedTimeout bounds the second try of a probe that should pass.
const allowedTimeout = 5 * time.Second

// TestPrivilegedTraceMatchesTraffic drives one agent through the policy sets
// of traceTable; for every cell, the verdict of `moat policy trace` (the CLI
// users run, on the same files the agent reads) must be the table's, and so
// must the fate of real TCP, UDP or ICMP packets.
func TestPrivilegedTraceMatchesTraffic(t *testing.T) {
	requirePrivileged(t)
	a := startAgent(t, agentSpec{short: "t", endpoints: traceEndpoints, policies: map[string]string{"p.yaml": traceTable[0].policy}})
	peers := map[string]peer{
		"a":    endpointPeer(a, "a", "10.210.0.1"),
		"b":    endpointPeer(a, "b", "10.210.0.2"),
		"c":    endpointPeer(a, "c", "10.210.0.3"),
		"w1":   worldPeer(t, "w1", "192.0.2.10", "10.210.255.254"),
		"w2":   worldPeer(t, "w2", "192.0.2.200", "10.210.255.254"),
		"host": hostPeer(),
	}
	for name, p := range peers {
		if name != "host" {
			serveEcho(t, p, traceTCPPorts, traceUDPPorts)
		}
	}
	for i, set := range traceTable {
		t.Run(set.name, func(t *testing.T) {
			if i > 0 {
				a.applyPolicy("p.yaml", set.policy)
			}
			checkTrafficTable(t, a, peers, set.cases)
		})
	}
}

// checkTrafficTable traces and probes every case concurrently and compares.
func checkTrafficTable(t *testing.T, a *testAgent, peers map[string]peer, cases []trafficCase) {
	t.Helper()
	type result struct {
		trace    string
		traceErr error
		probeErr error
	}
	results := make([]result, len(cases))
	var g errgroup.Group
	g.SetLimit(16)
	for i, c := range cases {
		src, ok1 := peers[c.from]
		dst, ok2 := peers[c.to]
		if !ok1 || !ok2 {
			t.Fatalf("case %d: unknown peer %q or %q", i, c.from, c.to)
		}
		g.Go(func() error {
			results[i].trace, results[i].traceErr = traceVerdict(t.Context(), a, src, dst, c)
			return nil
		})
		g.Go(func() error {
			results[i].probeErr = probe(src, dst.addr, c.proto, c.port, deniedTimeout)
			return nil
		})
	}
	_ = g.Wait()
	// A cell that trace allows but whose probe got no answer is probed once
	// more with a long timeout, so that a slow machine is not mistaken for
	// a drop; a real drop still fails.
	for i, c := range cases {
		if results[i].trace == policy.TraceAllowed && errors.Is(results[i].probeErr, errNoAnswer) {
			results[i].probeErr = probe(peers[c.from], peers[c.to].addr, c.proto, c.port, allowedTimeout)
		}
	}
	for i, c := range cases {
		name := fmt.Sprintf("%s->%s %d/%s", c.from, c.to, c.port, c.proto)
		if c.proto == protoICMP {
			name = fmt.Sprintf("%s->%s icmp echo", c.from, c.to)
		}
		r := results[i]
		want := policy.TraceDenied
		if c.want {
			want = policy.TraceAllowed
		}
		if r.traceErr != nil {
			t.Errorf("%s: moat policy trace: %v", name, r.traceErr)
			continue
		}
		var observed string
		switch {
		case r.probeErr == nil:
			observed = policy.TraceAllowed
		case errors.Is(r.probeErr, errNoAnswer):
			observed = policy.TraceDenied
		default:
			t.Errorf("%s: traffic: unexpected error (neither delivered nor dropped): %v", name, r.probeErr)
			continue
		}
		if r.trace != want {
			t.Errorf("%s: moat policy trace says %s, the table says %s", name, r.trace, want)
		}
		if observed != r.trace {
			t.Errorf("%s: real traffic was %s, moat policy trace says %s", name, observed, r.trace)
		}
	}
}

// traceVerdict runs `moat policy trace -o json` on the agent's own policy
// dir and endpoints file and returns the verdict.
func traceVerdict(ctx context.Context, a *testAgent, src, dst peer, c trafficCase) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args := []string{"policy", "trace", "-o", "json",
		"--policies", a.policyDir, "--endpoints", a.endpointsFile,
		"--from", src.ref, "--to", dst.ref,
		"--port", strconv.Itoa(int(c.port)) + "/" + string(c.proto)}
	cmd := exec.CommandContext(ctx, a.bins.cli, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	// Exit status 2 means "denied" and still prints the result.
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
		return "", fmt.Errorf("moat %v: %w: %s", args, err, stderr.Bytes())
	}
	var res policy.TraceResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return "", fmt.Errorf("decode trace output %q: %w", stdout.Bytes(), err)
	}
	if res.Verdict != policy.TraceAllowed && res.Verdict != policy.TraceDenied {
		return "", fmt.Errorf("trace verdict %q", res.Verdict)
	}
	return res.Verdict, nil
}
