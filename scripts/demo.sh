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
cleanup() {
	[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
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
echo "== flows (moat observe)"
moat observe --last 20
echo "== metrics (hubble_drop_total, hubble_flows_processed_total)"
curl -s 127.0.0.1:19965/metrics 2>/dev/null | grep -E '^hubble_(drop|flows_processed)_total' || true
if [[ $example == *starwars* ]]; then
	check_outcome "$post" "$put" "$xwing" || { echo "demo: agent log:" >&2; tail -n 30 "$work/agent.log" >&2; exit 1; }
	echo "demo: OK: the allowed request was answered, the denied ones were denied"
fi
