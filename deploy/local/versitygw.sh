#!/usr/bin/env bash
# versitygw.sh starts and stops a local S3 server (versitygw with its POSIX
# backend) for development: sluice's S3 blob store against a real server.
#
#   versitygw.sh start DIR PORT [ACCESS SECRET]   data under DIR, on 127.0.0.1:PORT
#   versitygw.sh stop DIR                         stop the server started on DIR
#
# Install the server with:
#   go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
# Buckets are the directories under DIR; DIR needs user xattrs (ext4 does).
# Region is us-east-1; use path-style addressing.
set -eu

usage() {
	echo "usage: $0 start DIR PORT [ACCESS SECRET] | stop DIR" >&2
	exit 2
}

find_bin() {
	if command -v versitygw >/dev/null 2>&1; then
		command -v versitygw
		return
	fi
	local gopath
	gopath=${GOPATH:-$(go env GOPATH 2>/dev/null || true)}
	if [ -n "$gopath" ] && [ -x "${gopath%%:*}/bin/versitygw" ]; then
		echo "${gopath%%:*}/bin/versitygw"
		return
	fi
	echo "versitygw not found; install it with: go install github.com/versity/versitygw/cmd/versitygw@v1.8.0" >&2
	exit 1
}

# is_versitygw PID: the process is alive and is versitygw (not a reused PID).
is_versitygw() {
	kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q versitygw
}

answers() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
	[ $# -eq 2 ] || [ $# -eq 4 ] || usage
	local dir=$1 port=$2 access=${3:-sluice} secret=${4:-sluice-secret}
	case $port in '' | *[!0-9]*) echo "bad port: $port" >&2; exit 2 ;; esac
	mkdir -p "$dir"
	local pidfile="$dir/versitygw.pid"
	if [ -f "$pidfile" ] && is_versitygw "$(cat "$pidfile")"; then
		echo "versitygw already running for $dir (pid $(cat "$pidfile"))" >&2
		exit 1
	fi
	if answers "$port"; then
		echo "127.0.0.1:$port is already in use" >&2
		exit 1
	fi
	local bin
	bin=$(find_bin)
	"$bin" --port "127.0.0.1:$port" --access "$access" --secret "$secret" --quiet --keep-alive posix "$dir" >"$dir/versitygw.log" 2>&1 &
	local pid=$!
	echo "$pid" >"$pidfile"
	# Ready within ~55 ms normally; give up after ~10 s.
	local i
	for i in $(seq 1 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "versitygw exited at start-up; log:" >&2
			cat "$dir/versitygw.log" >&2
			rm -f "$pidfile"
			exit 1
		fi
		if answers "$port"; then
			echo "versitygw pid $pid on http://127.0.0.1:$port (access $access), data in $dir"
			return
		fi
		sleep 0.1
	done
	echo "versitygw did not answer on 127.0.0.1:$port within 10 s; stopping it" >&2
	kill "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	exit 1
}

stop() {
	[ $# -eq 1 ] || usage
	local pidfile="$1/versitygw.pid"
	if [ ! -f "$pidfile" ]; then
		echo "no $pidfile: not running" >&2
		return
	fi
	local pid
	pid=$(cat "$pidfile")
	if ! is_versitygw "$pid"; then
		echo "pid $pid is not a running versitygw; removing $pidfile" >&2
		rm -f "$pidfile"
		return
	fi
	kill "$pid"
	local i
	for i in $(seq 1 50); do
		if ! kill -0 "$pid" 2>/dev/null; then
			rm -f "$pidfile"
			echo "versitygw pid $pid stopped"
			return
		fi
		sleep 0.1
	done
	echo "versitygw pid $pid ignored SIGTERM for 5 s; killing it" >&2
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pidfile"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
start) start "$@" ;;
stop) stop "$@" ;;
*) usage ;;
esac
