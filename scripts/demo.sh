#!/usr/bin/env bash
# moat demo: starts the standalone agent on an example (default: Star Wars),
# sends allowed and denied traffic between its endpoints (network namespaces
# the agent creates), shows the flows and metrics, and cleans everything up.
# Needs root (BPF, netns): run it as root, or as a user with sudo (it then
# re-runs itself with sudo after building). It exits non-zero unless the
# documented outcome happened (Star Wars: the allowed request is answered by
# the server, the PUT gets 403 from the proxy, the xwing gets no connection).
# Usage: scripts/demo.sh [examples/<name>]
#        scripts/demo.sh --check-outcome POST_CODE PUT_CODE XWING_CODE
#        scripts/demo.sh --check-dns-outcome ALLOWED REFUSED CODE80 CODE81 CODE_NEVER
set -euo pipefail
cd "$(dirname "$0")/.."

# check_outcome POST PUT XWING: the HTTP codes curl printed (000: no
# connection). Prints what went wrong and fails unless all three match.
check_outcome() {
	local post=$1 put=$2 xwing=$3 bad=0
	if [[ $post == 000 || $post == 403 || $post == 400 ]]; then
		echo "demo: FAILED: tiefighter POST /v1/request-landing got ${post/000/no connection}; want an answer from the server" >&2
		bad=1
	fi
	if [[ $put != 403 ]]; then
		echo "demo: FAILED: tiefighter PUT /v1/exhaust-port got ${put/000/no connection}; want 403 from the proxy" >&2
		bad=1
	fi
	if [[ $xwing != 000 ]]; then
		echo "demo: FAILED: xwing POST /v1/request-landing got $xwing; want no connection (dropped in the kernel)" >&2
		bad=1
	fi
	return $bad
}
# check_dns_outcome ALLOWED REFUSED LEARNED80 LEARNED81 NEVER: what the
# dns-fqdns demo saw (resolver output, then HTTP codes).
check_dns_outcome() {
	local allowed=$1 refused=$2 l80=$3 l81=$4 never=$5 bad=0
	if [[ $allowed != "NOERROR 198.19.0.10" ]]; then
		echo "demo: FAILED: api.example.com resolved to '$allowed'; want 'NOERROR 198.19.0.10'" >&2
		bad=1
	fi
	if [[ $refused != REFUSED ]]; then
		echo "demo: FAILED: www.example.org got '$refused'; want REFUSED from the DNS proxy" >&2
		bad=1
	fi
	if [[ $l80 == 000 ]]; then
		echo "demo: FAILED: 198.19.0.10:80 (resolved, toFQDNs on port 80) got no connection; want an answer" >&2
		bad=1
	fi
	if [[ $l81 != 000 ]]; then
		echo "demo: FAILED: 198.19.0.10:81 got $l81; want no connection (only port 80 is allowed)" >&2
		bad=1
	fi
	if [[ $never != 000 ]]; then
		echo "demo: FAILED: 198.19.0.20:80 (never resolved) got $never; want no connection" >&2
		bad=1
	fi
	return $bad
}
if [[ ${1:-} == --check-dns-outcome ]]; then
	check_dns_outcome "$2" "$3" "$4" "$5" "$6"
	exit
fi
if [[ ${1:-} == --check-outcome ]]; then
	check_outcome "$2" "$3" "$4"
	exit
fi

example=${1:-examples/starwars}
# Build as the calling user (root-owned files in a user's checkout are a
# nuisance; root's PATH may lack go). Skipped when go is missing and the
# binaries exist, as under sudo after the build below.
if command -v go >/dev/null 2>&1; then
	go build -o bin/ ./cmd/...
elif [[ ! -x bin/moat-agent || ! -x bin/moat ]]; then
	echo "demo: go is not in PATH and bin/ has no binaries: run make build first" >&2
	exit 1
fi
if [[ $EUID -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then
		echo "demo: not root: re-running with sudo"
		exec sudo -- "$0" "$@"
	fi
	echo "demo: run as root (it loads BPF programs and creates network namespaces); sudo is not installed" >&2
	exit 1
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

work=$(mktemp -d)
prefix=demo-
pins=/sys/fs/bpf/moat-demo
agent_pid=""
server_pid=""
world=""
cleanup() {
	[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
	for pid in ${extra_pids:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
	if [[ -n $world ]]; then
		ip route del 198.19.0.0/24 2>/dev/null || true
		ip netns del "$world" 2>/dev/null || true
	fi
	[[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
	./bin/moat-agent cleanup --bpf-root "$pins" --netns-prefix "$prefix" >/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
echo "== moat-agent on $example"
./bin/moat-agent --policies "$example/policies" --endpoints "$example/endpoints.yaml" \
	--state-dir "$work/state" --run-dir "$work/run" --bpf-root "$pins" --netns-prefix "$prefix" \
	--metrics-address 127.0.0.1:19965 --verdict-events >"$work/agent.log" 2>&1 &
agent_pid=$!
moat() { ./bin/moat "$@" --agent "$work/run/agent.sock"; }
ready=""
for _ in $(seq 100); do
	if moat status -o json 2>/dev/null | grep -q '"ifindex": [1-9]'; then ready=1; break; fi
	kill -0 "$agent_pid" 2>/dev/null || break
	sleep 0.1
done
if [[ -z $ready ]]; then
	echo "demo: FAILED: the agent did not come up; its log:" >&2
	tail -n 30 "$work/agent.log" >&2
	exit 1
fi
moat status

ns() { echo "${prefix}default-$1"; }
ip_of() { ./bin/moat policy compile --policies "$example/policies" --endpoints "$example/endpoints.yaml" --endpoint "$1" -o json | sed -n 's/.*"addresses": \[ *"\([0-9.]*\)".*/\1/p;/"addresses"/{n;s/ *"\([0-9.]*\)".*/\1/p}' | head -1; }

try() { # try FROM TO PORT: open a TCP connection from FROM's netns
	local from=$1 to=$2 port=$3 addr
	addr=$(ip_of "$to")
	if ip netns exec "$(ns "$from")" timeout 2 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then
		echo "  $from -> $to:$port  connected"
	else
		echo "  $from -> $to:$port  no connection (dropped or refused)"
	fi
}

http() { # http VAR FROM METHOD URL: an HTTP request from FROM's netns; prints the status and stores it in VAR
	local -n out=$1
	local from=$2 method=$3 url=$4 code
	code=$(ip netns exec "$(ns "$from")" curl -s -m 3 -o /dev/null -w '%{http_code}' -X "$method" "$url") || true
	code=${code:-000}
	echo "  $from: $method $url -> ${code/000/no connection}"
	out=$code
}

if [[ $example == *starwars* ]]; then
	# A stand-in deathstar: any HTTP server answers (python's answers POST with 501).
	ip netns exec "$(ns deathstar)" python3 -c 'import http.server; http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=80, bind="0.0.0.0")' >/dev/null 2>&1 &
	server_pid=$!
	for _ in $(seq 50); do moat status | grep -q "L7 proxy:  ready" && break; sleep 0.1; done
	deathstar=$(ip_of deathstar)
	for _ in $(seq 50); do # the stand-in server listens
		ip netns exec "$(ns deathstar)" bash -c 'exec 3<>/dev/tcp/127.0.0.1/80' 2>/dev/null && break
		sleep 0.1
	done
	echo "== traffic"
	http post tiefighter POST "http://$deathstar/v1/request-landing"  # empire: allowed by the HTTP rule, reaches the server
	http put tiefighter PUT "http://$deathstar/v1/exhaust-port"       # empire: denied by the proxy (403 Access denied)
	http xwing xwing POST "http://$deathstar/v1/request-landing"      # alliance: dropped in the kernel (L3/L4)
	echo "== the same questions, answered offline (moat policy trace)"
	./bin/moat policy trace --policies "$example/policies" --endpoints "$example/endpoints.yaml" \
		--from default/tiefighter --to default/deathstar --port 80/TCP --http-method PUT --http-path /v1/exhaust-port || true
fi
if [[ $example == *dns-fqdns* ]]; then
	# The cluster DNS server (a stand-in in the coredns endpoint) answers
	# api.example.com with 198.19.0.10; a "world" netns owns 198.19.0.0/24
	# and serves HTTP on ports 80 and 81.
	ip netns exec "${prefix}kube-system-coredns" python3 scripts/demo-dns.py serve 10.200.2.53 &
	extra_pids="$!"
	world=${prefix}world
	ip netns add "$world"
	ip link add "${prefix}wh" type veth peer name eth0 netns "$world"
	ip -n "$world" link set lo up
	ip -n "$world" addr add 198.19.0.1/32 dev eth0
	ip -n "$world" link set eth0 up
	ip -n "$world" route add local 198.19.0.0/24 dev lo
	ip addr add 10.220.255.254/32 dev "${prefix}wh" scope link
	ip link set "${prefix}wh" up
	# Replies from the world are forwarded by the host (the agent turns
	# forwarding on for its own endpoints' interfaces only).
	sysctl -qw "net.ipv4.conf.${prefix}wh.forwarding=1"
	ip route add 198.19.0.0/24 via 198.19.0.1 dev "${prefix}wh" onlink
	ip -n "$world" route add default via 10.220.255.254 dev eth0 onlink
	for port in 80 81; do
		ip netns exec "$world" python3 -m http.server "$port" --bind 0.0.0.0 >/dev/null 2>&1 &
		extra_pids="$extra_pids $!"
	done
	for _ in $(seq 50); do # the stand-in servers listen
		ip netns exec "$world" bash -c 'exec 3<>/dev/tcp/198.19.0.10/81' 2>/dev/null && break
		sleep 0.1
	done
	q() { ip netns exec "$(ns client)" python3 scripts/demo-dns.py query 10.200.2.53 "$1"; }
	get() { # get VAR URL
		local -n out=$1
		out=$(ip netns exec "$(ns client)" curl -s -m 3 -o /dev/null -w '%{http_code}' "$2") || true
		out=${out:-000}
		echo "  client: GET $2 -> ${out/000/no connection}"
	}
	echo "== traffic"
	allowed=$(q api.example.com); echo "  client: resolve api.example.com -> $allowed"
	refused=$(q www.example.org); echo "  client: resolve www.example.org -> $refused"
	get learned80 "http://198.19.0.10/"      # toFQDNs learned it: allowed on 80
	get learned81 "http://198.19.0.10:81/"   # not on 81
	get never "http://198.19.0.20/"          # an address no answer gave
	echo "== the FQDN cache (moat fqdn cache)"
	moat fqdn cache
fi
echo "== flows (moat observe)"
moat observe --last 20
echo "== metrics (hubble_drop_total, hubble_flows_processed_total)"
curl -s 127.0.0.1:19965/metrics 2>/dev/null | grep -E '^hubble_(drop|flows_processed)_total' || true
if [[ $example == *starwars* ]]; then
	check_outcome "$post" "$put" "$xwing" || { echo "demo: agent log:" >&2; tail -n 30 "$work/agent.log" >&2; exit 1; }
	echo "demo: OK: the allowed request was answered, the denied ones were denied"
fi
if [[ $example == *dns-fqdns* ]]; then
	check_dns_outcome "$allowed" "$refused" "$learned80" "$learned81" "$never" || { echo "demo: agent log:" >&2; tail -n 30 "$work/agent.log" >&2; exit 1; }
	echo "demo: OK: the allowed name resolved and its address answered on port 80; the other name was REFUSED; the other port and the unresolved address were dropped"
fi
