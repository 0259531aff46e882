#!/usr/bin/env bash
# moat demo: starts the standalone agent on an example (default: Star Wars),
# sends allowed and denied traffic between its endpoints (network namespaces
# the agent creates), shows the flows and metrics, and cleans everything up.
# Needs root (BPF, netns). Usage: scripts/demo.sh [examples/<name>]
set -euo pipefail
cd "$(dirname "$0")/.."
example=${1:-examples/starwars}
[[ $EUID -eq 0 ]] || { echo "demo: run as root (it loads BPF programs and creates network namespaces)" >&2; exit 1; }
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

work=$(mktemp -d)
prefix=demo-
pins=/sys/fs/bpf/moat-demo
agent_pid=""
cleanup() {
	[[ -n $agent_pid ]] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
	pkill -f "moat-demo-server" 2>/dev/null || true
	./bin/moat-agent cleanup --bpf-root "$pins" --netns-prefix "$prefix" >/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

go build -o bin/ ./cmd/...
echo "== moat-agent on $example"
./bin/moat-agent --policies "$example/policies" --endpoints "$example/endpoints.yaml" \
	--state-dir "$work/state" --run-dir "$work/run" --bpf-root "$pins" --netns-prefix "$prefix" \
	--metrics-address 127.0.0.1:19965 --verdict-events >"$work/agent.log" 2>&1 &
agent_pid=$!
moat() { ./bin/moat "$@" --agent "$work/run/agent.sock"; }
for _ in $(seq 100); do
	moat status -o json 2>/dev/null | grep -q '"ifindex": [1-9]' && break
	sleep 0.1
done
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

http() { # http FROM METHOD URL: an HTTP request from FROM's netns, prints the status
	local from=$1 method=$2 url=$3 code
	code=$(ip netns exec "$(ns "$from")" curl -s -m 3 -o /dev/null -w '%{http_code}' -X "$method" "$url") || true
	echo "  $from: $method $url -> ${code/000/no connection}"
}

if [[ $example == *starwars* ]]; then
	# A stand-in deathstar: any HTTP server answers (python's answers POST with 501).
	ip netns exec "$(ns deathstar)" python3 -c 'import http.server,sys; sys.argv[0]="moat-demo-server"; http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=80, bind="0.0.0.0")' >/dev/null 2>&1 &
	for _ in $(seq 50); do moat status | grep -q "L7 proxy:  ready" && break; sleep 0.1; done
	sleep 0.5
	deathstar=$(ip_of deathstar)
	echo "== traffic"
	http tiefighter POST "http://$deathstar/v1/request-landing"  # empire: allowed by the HTTP rule, reaches the server
	http tiefighter PUT "http://$deathstar/v1/exhaust-port"      # empire: denied by the proxy (403 Access denied)
	http xwing POST "http://$deathstar/v1/request-landing"       # alliance: dropped in the kernel (L3/L4)
	echo "== the same questions, answered offline (moat policy trace)"
	./bin/moat policy trace --policies "$example/policies" --endpoints "$example/endpoints.yaml" \
		--from default/tiefighter --to default/deathstar --port 80/TCP --http-method PUT --http-path /v1/exhaust-port || true
fi
echo "== flows (moat observe)"
moat observe --last 20
echo "== metrics (hubble_drop_total, hubble_flows_processed_total)"
curl -s 127.0.0.1:19965/metrics 2>/dev/null | grep -E '^hubble_(drop|flows_processed)_total' || true
