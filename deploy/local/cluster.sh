#!/usr/bin/env bash
# cluster.sh runs sluice as a multi-process cluster on loopback, for trying
# the distributed set-up on one machine (`make cluster`, `make cluster-stop`):
#
#   3 nats-server nodes, one JetStream cluster   clients 127.0.0.1:14222-14224
#   versitygw (S3, deploy/local/versitygw.sh)    127.0.0.1:17070
#   the demo sink (bin/sink) as the upstream     127.0.0.1:12525
#   2 edges (bin/edge)                           SMTP on 127.0.0.1:10025 and :10026
#   3 workers (bin/worker)                       running deploy/examples/filters/demo.sh
#
#   cluster.sh start     start everything (after `make build`)
#   cluster.sh stop      stop exactly the processes start recorded
#   cluster.sh status    list them
#
# Run from anywhere; it works in the repository root. Configuration:
# deploy/examples/cluster/{edge,worker}.yaml. State, generated NATS
# configs and logs live under .cluster/; the PIDs in .cluster/pids.
# Needs nats-server (go install github.com/nats-io/nats-server/v2@v2.15.2)
# and versitygw (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0),
# in $(go env GOPATH)/bin or on PATH: deploy/local/test-deps.sh installs both.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

state=$top/.cluster
pidfile=$state/pids
logs=$state/logs
examples=$top/deploy/examples/cluster

NATS_VERSION=2.15.2
NATS_CLIENT_PORTS=(14222 14223 14224)
NATS_ROUTE_PORTS=(16222 16223 16224)
NATS_HTTP_PORTS=(18222 18223 18224)
S3_PORT=17070
S3_ACCESS=sluice
S3_SECRET=sluice-secret
SINK_PORT=12525
EDGE_PORTS=(10025 10026)
WORKERS=3

say() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

usage() {
	echo "usage: $0 start|stop|status" >&2
	exit 2
}

# --- processes -------------------------------------------------------------

# is_ours PID MARKER: PID is alive and its command line contains MARKER,
# so it is still the process start recorded (not a reused PID).
is_ours() {
	local pid=$1 marker=$2 cmdline
	[ -r "/proc/$pid/cmdline" ] || return 1
	cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$marker"* ]]
}

# record PID NAME MARKER appends a line to the pid file.
record() {
	echo "$1 $2 $3" >>"$pidfile"
}

# launch NAME MARKER LOG COMMAND...: starts COMMAND in its own session (so
# that it outlives this script and its terminal), logging to LOG, and
# records its PID. setsid and env exec the command: $! is its PID.
launch() {
	local name=$1 marker=$2 log=$3
	shift 3
	local setsid=()
	command -v setsid >/dev/null && setsid=(setsid)
	echo "=== cluster.sh: $name started $(date -u +%FT%TZ)" >>"$log"
	"${setsid[@]}" "$@" </dev/null >>"$log" 2>&1 &
	local pid=$!
	record "$pid" "$name" "$marker"
	local i
	for i in $(seq 1 20); do
		is_ours "$pid" "$marker" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "cluster: $name (pid $pid) did not start; end of $log:" >&2
	tail -n 20 "$log" >&2
	return 1
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# http_ok PORT PATH: GET answers 200.
http_ok() {
	local line
	line=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3
		head -n 1 <&3' _ "$1" "$2" 2>/dev/null) || return 1
	[[ $line == *" 200 "* ]]
}

# smtp_ok PORT: the server greets with 220.
smtp_ok() {
	local line
	line=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		IFS= read -r line <&3; printf "QUIT\r\n" >&3; echo "$line"' _ "$1" 2>/dev/null) || return 1
	[[ $line == 220* ]]
}

# wait_proc NAME SECONDS COMMAND...: polls COMMAND every 0.2 s until it
# succeeds, for the recorded process NAME; gives up (showing the end of its
# log) when it exits or after SECONDS.
wait_proc() {
	local name=$1 secs=$2
	shift 2
	local pid marker i
	read -r pid marker < <(awk -v n="$name" '$2 == n { $2 = ""; print }' "$pidfile")
	marker=${marker# }
	for i in $(seq 1 $((secs * 5))); do
		"$@" && return 0
		if ! is_ours "$pid" "$marker"; then
			echo "cluster: $name (pid $pid) exited; end of .cluster/logs/$name.log:" >&2
			tail -n 5 "$logs/$name.log" >&2
			return 1
		fi
		sleep 0.2
	done
	echo "cluster: $name not ready within ${secs}s; end of .cluster/logs/$name.log:" >&2
	tail -n 5 "$logs/$name.log" >&2
	return 1
}

find_nats() {
	local gopath cand v
	gopath=${GOPATH:-$(go env GOPATH 2>/dev/null || true)}
	for cand in "${gopath%%:*}/bin/nats-server" $(command -v nats-server || true); do
		[ -x "$cand" ] || continue
		v=$("$cand" --version 2>/dev/null | sed -n 's/^nats-server: v//p')
		if [ "$v" != "$NATS_VERSION" ]; then
			say "warning: $cand is v$v, not v$NATS_VERSION (the version sluice is tested with)" >&2
		fi
		echo "$cand"
		return
	done
	die "nats-server not found; install it with: go install github.com/nats-io/nats-server/v2@v$NATS_VERSION"
}

# --- start -----------------------------------------------------------------

running_any() {
	[ -f "$pidfile" ] || return 1
	local pid name marker
	while read -r pid name marker; do
		is_ours "$pid" "$marker" && return 0
	done <"$pidfile"
	return 1
}

nats_config() {
	local i=$1 j
	cat <<EOF
# Generated by deploy/local/cluster.sh: node n$i of a 3-node loopback cluster.
server_name: n$i
listen: 127.0.0.1:${NATS_CLIENT_PORTS[$i]}
http: 127.0.0.1:${NATS_HTTP_PORTS[$i]}
jetstream {
  store_dir: "$state/nats/n$i"
  max_memory_store: 256MB
  max_file_store: 4GB
}
cluster {
  name: sluice-local
  listen: 127.0.0.1:${NATS_ROUTE_PORTS[$i]}
  routes: [
EOF
	for j in 0 1 2; do
		[ "$j" = "$i" ] || echo "    nats-route://127.0.0.1:${NATS_ROUTE_PORTS[$j]}"
	done
	echo "  ]"
	echo "}"
}

start() {
	for b in edge worker sink; do
		[ -x "bin/$b" ] || die "bin/$b missing: run make build (make cluster does)"
	done
	if running_any; then
		die "already running (see: $0 status); stop it with: make cluster-stop"
	fi
	rm -f "$pidfile"
	local nats port
	nats=$(find_nats)
	for port in "${NATS_CLIENT_PORTS[@]}" "${NATS_ROUTE_PORTS[@]}" "${NATS_HTTP_PORTS[@]}" \
		"$S3_PORT" "$SINK_PORT" "${EDGE_PORTS[@]}"; do
		if port_in_use "$port"; then
			die "127.0.0.1:$port is already in use"
		fi
	done
	mkdir -p "$state/nats" "$logs"
	: >"$pidfile"
	# Whatever fails from here on, stop what was started.
	trap 'echo "cluster: start-up failed; stopping what was started" >&2; stop >&2' ERR

	local i urls=()
	for i in 0 1 2; do
		mkdir -p "$state/nats/n$i"
		nats_config "$i" >"$state/nats/n$i.conf"
		launch "nats-n$i" "$state/nats/n$i.conf" "$logs/nats-n$i.log" "$nats" -c "$state/nats/n$i.conf"
		urls+=("nats://127.0.0.1:${NATS_CLIENT_PORTS[$i]}")
	done
	for i in 0 1 2; do
		wait_proc "nats-n$i" 30 http_ok "${NATS_HTTP_PORTS[$i]}" /healthz
	done
	local nats_urls
	nats_urls=$(IFS=,; echo "${urls[*]}")
	say "NATS cluster up: $nats_urls"

	local setsid=()
	command -v setsid >/dev/null && setsid=(setsid -w)
	"${setsid[@]}" deploy/local/versitygw.sh start "$state/s3" "$S3_PORT" "$S3_ACCESS" "$S3_SECRET" >>"$logs/versitygw.log"
	record "$(cat "$state/s3/versitygw.pid")" versitygw "posix $state/s3"
	say "versitygw up: http://127.0.0.1:$S3_PORT (data in .cluster/s3)"

	launch sink "-dir $state/sink-mail" "$logs/sink.log" \
		bin/sink -listen "127.0.0.1:$SINK_PORT" -dir "$state/sink-mail"
	wait_proc sink 10 smtp_ok "$SINK_PORT"

	local n=0
	for port in "${EDGE_PORTS[@]}"; do
		n=$((n + 1))
		launch "edge$n" "--data-dir $state/edge$n" "$logs/edge$n.log" \
			env SLUICE_LISTEN="127.0.0.1:$port" "$top/bin/edge" -d 3 -f "$examples/edge.yaml" \
			--hostname "mx$n.cluster.test" --data-dir "$state/edge$n" \
			--nats-url "$nats_urls" \
			--store-s3-endpoint "127.0.0.1:$S3_PORT" --store-s3-create-bucket --store-s3-tls=false \
			--worker-slots 0
	done
	n=0
	for port in "${EDGE_PORTS[@]}"; do
		n=$((n + 1))
		wait_proc "edge$n" 60 smtp_ok "$port"
	done

	for n in $(seq 1 "$WORKERS"); do
		launch "worker$n" "--data-dir $state/worker$n" "$logs/worker$n.log" \
			"$top/bin/worker" -d 3 -f "$examples/worker.yaml" --data-dir "$state/worker$n" \
			--nats-url "$nats_urls"
	done
	for n in $(seq 1 "$WORKERS"); do
		wait_proc "worker$n" 60 grep -q "worker started" "$logs/worker$n.log"
	done
	trap - ERR

	cat <<EOF
cluster: up. Every process is in .cluster/pids ($0 status).
  SMTP:     127.0.0.1:${EDGE_PORTS[0]} (mx1.cluster.test) and 127.0.0.1:${EDGE_PORTS[1]} (mx2.cluster.test)
  upstream: demo sink on 127.0.0.1:$SINK_PORT, delivered mail in .cluster/sink-mail/
  NATS:     $nats_urls (monitoring http://127.0.0.1:${NATS_HTTP_PORTS[0]}/ ...)
  S3:       http://127.0.0.1:$S3_PORT, bucket sluice (access $S3_ACCESS)
  logs:     .cluster/logs/ (edge1.log, edge2.log, worker1..$WORKERS.log, nats-n0..2.log, sink.log, versitygw.log)
Send mail:
  bin/sink -send 127.0.0.1:${EDGE_PORTS[0]}
  bin/sink -send 127.0.0.1:${EDGE_PORTS[1]} -body 'REJECT-ME please'     # the demo filter refuses it
  swaks --server 127.0.0.1:${EDGE_PORTS[0]} --from alice@example.com --to bob@example.com
Stop everything: make cluster-stop
EOF
}

# --- stop and status -------------------------------------------------------

# stop_group PATTERN: SIGTERM to every recorded process whose name matches,
# then wait (edges drain for up to drain_timeout), then SIGKILL.
stop_group() {
	local pattern=$1 pid name marker alive=()
	while read -r pid name marker; do
		# shellcheck disable=SC2053
		[[ $name == $pattern ]] || continue
		if is_ours "$pid" "$marker"; then
			kill -TERM "$pid" 2>/dev/null || true
			alive+=("$pid:$name:$marker")
		else
			say "$name (pid $pid) is not running"
		fi
	done <"$pidfile"
	local entry i left
	for i in $(seq 1 100); do
		left=()
		for entry in "${alive[@]}"; do
			IFS=: read -r pid name marker <<<"$entry"
			is_ours "$pid" "$marker" && left+=("$entry")
		done
		if [ ${#left[@]} -eq 0 ]; then
			break
		fi
		sleep 0.2
	done
	for entry in "${alive[@]}"; do
		IFS=: read -r pid name marker <<<"$entry"
		if is_ours "$pid" "$marker"; then
			say "$name (pid $pid) ignored SIGTERM for 20 s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		else
			say "$name (pid $pid) stopped"
		fi
	done
}

stop() {
	if [ ! -f "$pidfile" ]; then
		say "not running (no .cluster/pids)"
		return 0
	fi
	# Edges first, so that they drain while the workers still answer.
	stop_group 'edge*'
	stop_group 'worker*'
	stop_group sink
	stop_group versitygw
	stop_group 'nats-*'
	rm -f "$pidfile" "$state/s3/versitygw.pid"
	say "stopped; state and logs stay in .cluster/"
}

status() {
	if [ ! -f "$pidfile" ]; then
		say "not running (no .cluster/pids)"
		return 0
	fi
	local pid name marker
	while read -r pid name marker; do
		if is_ours "$pid" "$marker"; then
			printf '%-10s pid %-7s running\n' "$name" "$pid"
		else
			printf '%-10s pid %-7s not running\n' "$name" "$pid"
		fi
	done <"$pidfile"
}

[ $# -eq 1 ] || usage
case $1 in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
