#!/usr/bin/env bash
# CI check of the Debian package (make deb-test; as root, on a machine
# where nothing else uses it): install it with dpkg -i, check the
# binaries, man pages and units, run an instance exactly as
# sluice-edge@.service's ExecStart says, as the package's user with the
# directories systemd would give it, send a message through it to
# smtp-sink, stop it. Then the drop-in: with Debian's proxsmtp installed,
# /usr/sbin/proxsmtpd diverted and replaced by a link to sluice-edge, an
# instance of Debian's own proxsmtp@.service (its ExecStart, as
# _proxsmtp, with its pid file) and of /etc/init.d/proxsmtp start/stop,
# each passing a message and logging to syslog (facility mail). Last,
# remove the package and check that nothing of it is left running or
# installed.
set -euo pipefail
deb=${1:?usage: deb-test.sh PACKAGE.deb}
[ "$(id -u)" = 0 ] || { echo "deb-test: needs root (it installs a package)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin"
inst=sluicecitest
px=proxsmtpcitest
port_edge=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port_px=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port_sink=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
chmod 0755 "$work"
pids=()
diverted=0
syslog_sock=0
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$work/px.pid" ] && kill "$(cat "$work/px.pid")" 2>/dev/null
	pkill -x proxsmtpd 2>/dev/null
	if [ "$diverted" = 1 ]; then
		rm -f /usr/sbin/proxsmtpd
		dpkg-divert --local --rename --remove /usr/sbin/proxsmtpd >/dev/null || true
	fi
	[ "$syslog_sock" = 1 ] && rm -f /dev/log
	rm -f "/etc/proxsmtp/$inst.conf" "/etc/proxsmtp/$px.conf"
	rm -rf "$work" "/var/lib/sluice/$px"
}
trap cleanup EXIT
step() { echo "== deb-test: $*"; }

step "dpkg -i $deb"
dpkg -i "$deb"

step "sluice-edge -v"
out=$(sluice-edge -v)
echo "$out"
grep -q "version 0" <<<"$out"

step "man pages"
for m in sluice-edge sluice-worker sluice-replay sluice.conf; do
	MANPAGER=cat man "$m" 2>/dev/null | head -n 4
	MANPAGER=cat man "$m" 2>/dev/null | grep -q -e NAME -e Configuration || { echo "deb-test: man $m shows nothing" >&2; exit 1; }
done

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/sluice-edge@.service /lib/systemd/system/sluice-worker.service /lib/systemd/system/sluice.target

step "the system user and its state directory"
getent passwd _sluice
[ "$(stat -c %U /var/lib/sluice)" = _sluice ]

step "an instance as sluice-edge@$inst.service starts it"
mkdir -p /etc/proxsmtp
cat >"/etc/proxsmtp/$inst.conf" <<CONF
Listen: 127.0.0.1:$port_edge
OutAddress: 127.0.0.1:$port_sink
FilterCommand: printf 'X-Deb-Test: %s\n' "\$(id -un)"; cat
CONF
mkdir -m 1777 "$work/sink"
smtp-sink -u nobody -d "$work/sink/%M." "127.0.0.1:$port_sink" 10 &
pids+=($!)
# What systemd does for the unit: its user, StateDirectory=sluice/%I (made
# and owned for it), the environment files, then ExecStart with %I.
install -d -m 0750 -o _sluice -g _sluice "/var/lib/sluice/$inst"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/sluice-edge@.service | sed "s/%I/$inst/g; s/%i/$inst/g")
echo "ExecStart: $exec_start"
set -a
[ -f /etc/sluice/sluice.env ] && . /etc/sluice/sluice.env
set +a
# shellcheck disable=SC2086
STATE_DIRECTORY="/var/lib/sluice/$inst" setpriv --reuid=_sluice --regid=_sluice --init-groups \
	$exec_start >"$work/edge.log" 2>&1 &
edge=$!
pids+=($edge)
for _ in $(seq 100); do
	if bash -c "exec 3<>/dev/tcp/127.0.0.1/$port_edge" 2>/dev/null; then break; fi
	kill -0 "$edge" 2>/dev/null || { cat "$work/edge.log"; echo "deb-test: the edge exited" >&2; exit 1; }
	sleep 0.1
done
swaks --server "127.0.0.1:$port_edge" --from alice@example.com --to bob@example.com \
	--h-Subject "through the package" --timeout 60 | tail -n 4
got=$(cat "$work"/sink/* 2>/dev/null | grep -c '^X-Deb-Test: _sluice' || true)
echo "smtp-sink has $got message(s) filtered as _sluice"
[ "$got" = 1 ]
grep -q 'status=FILTERED' "$work/edge.log"
grep -q "store=/var/lib/sluice/$inst/messages" "$work/edge.log"
head -n 5 "$work/edge.log"
ps -o user=,pid=,args= -p "$edge"

step "stop (SIGTERM, as systemctl stop)"
kill -TERM "$edge"
wait "$edge" || true
# The init script below starts every /etc/proxsmtp/*.conf: only its own.
rm -f "/etc/proxsmtp/$inst.conf"

# --- The drop-in: Debian's proxsmtp, its daemon replaced by sluice-edge.
[ -x /usr/sbin/proxsmtpd ] && [ -f /lib/systemd/system/proxsmtp@.service ] ||
	{ echo "deb-test: Debian's proxsmtp is not installed (make test-deps installs it)" >&2; exit 1; }
# A syslog daemon's socket, unless the machine has one: what the daemon
# logs, with its priority, for the checks below.
if [ ! -e /dev/log ]; then
	syslog_sock=1
	python3 - "$work/syslog" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
os.chmod("/dev/log", 0o666)
with open(sys.argv[1], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
PY
	pids+=($!)
	for _ in $(seq 50); do [ -S /dev/log ] && break; sleep 0.1; done
else
	echo "deb-test: /dev/log belongs to this machine's syslog daemon; the syslog lines are not checked here"
fi
# check_syslog PID: the daemon logged as proxsmtpd[PID], at mail.info
# (priority 2*8+6 = 22), that it listens.
check_syslog() {
	[ "$syslog_sock" = 1 ] || return 0
	grep -F "<22>" "$work/syslog" | grep -F "proxsmtpd[$1]:" | grep -q "edge listening" ||
		{ cat "$work/syslog"; echo "deb-test: no mail.info line from proxsmtpd[$1] in syslog" >&2; exit 1; }
	grep -F "proxsmtpd[$1]:" "$work/syslog" | head -n 3
}
# sent_through SUBJECT: the message reached smtp-sink, filtered as _proxsmtp.
sent_through() {
	swaks --server "127.0.0.1:$port_px" --from alice@example.com --to bob@example.com \
		--h-Subject "$1" --timeout 60 | tail -n 2
	local f
	f=$(grep -l "^Subject: $1" "$work"/sink/* 2>/dev/null | head -n 1)
	[ -n "$f" ] && grep -q '^X-Deb-Test: _proxsmtp' "$f" ||
		{ echo "deb-test: \"$1\" did not reach smtp-sink filtered as _proxsmtp" >&2; exit 1; }
}
# gone PID: the process ended within 10 s.
gone() {
	for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
	echo "deb-test: process $1 still running" >&2
	exit 1
}

step "proxsmtpd replaced: dpkg-divert, /usr/sbin/proxsmtpd -> sluice-edge"
dpkg-divert --local --rename --divert /usr/sbin/proxsmtpd.distrib --add /usr/sbin/proxsmtpd
diverted=1
ln -s sluice-edge /usr/sbin/proxsmtpd
# Debian's sample configuration, then this test's lines (later ones win).
{
	cat /usr/share/doc/proxsmtp/examples/proxsmtpd.conf
	echo "Listen: 127.0.0.1:$port_px"
	echo "OutAddress: 127.0.0.1:$port_sink"
	echo "FilterCommand: printf 'X-Deb-Test: %s\n' \"\$(id -un)\"; cat"
} >"/etc/proxsmtp/$px.conf"

step "proxsmtp@$px.service's ExecStart, as _proxsmtp (Type=forking)"
# What systemd does for Debian's unit: RuntimeDirectory=proxsmtp, User=
# and Group=_proxsmtp with the environment it sets for them, then
# ExecStart, which must return once the daemon serves.
install -d -m 0755 -o _proxsmtp -g _proxsmtp /run/proxsmtp
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/proxsmtp@.service | sed "s/%I/$px/g; s/%i/$px/g")
echo "ExecStart: $exec_start"
pidfile=/run/proxsmtp/$px.pid
# shellcheck disable=SC2086
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/nonexistent USER=_proxsmtp LOGNAME=_proxsmtp SHELL=/usr/sbin/nologin \
	setpriv --reuid=_proxsmtp --regid=_proxsmtp --init-groups $exec_start
echo "ExecStart returned 0"
pid=$(cat "$pidfile")
cp "$pidfile" "$work/px.pid"
ps -o user=,pid=,ppid=,comm=,args= -p "$pid"
[ "$(ps -o user= -p "$pid")" = _proxsmtp ] || { echo "deb-test: the daemon does not run as _proxsmtp" >&2; exit 1; }
[ "$(cat "/proc/$pid/comm")" = proxsmtpd ] || { echo "deb-test: the daemon is not named proxsmtpd (killproc --name)" >&2; exit 1; }
sent_through "through Debian's proxsmtp unit"
check_syslog "$pid"
step "stop as systemd does (SIGTERM to the main process)"
kill -TERM "$pid"
gone "$pid"
[ ! -e "$pidfile" ] || { echo "deb-test: $pidfile left behind" >&2; exit 1; }

step "/etc/init.d/proxsmtp start, then stop"
/etc/init.d/proxsmtp start
pidfile=/var/run/proxsmtp/$px.pid
pid=$(cat "$pidfile")
cp "$pidfile" "$work/px.pid"
ps -o user=,pid=,ppid=,comm=,args= -p "$pid"
# Started as root with Debian's User: _proxsmtp: it switched.
[ "$(ps -o user= -p "$pid")" = _proxsmtp ] || { echo "deb-test: the daemon did not switch to _proxsmtp" >&2; exit 1; }
sent_through "through Debian's init script"
check_syslog "$pid"
/etc/init.d/proxsmtp stop
gone "$pid"
if pgrep -x proxsmtpd >/dev/null; then
	pgrep -ax proxsmtpd
	echo "deb-test: proxsmtpd (sluice-edge) left running after the init script's stop" >&2
	exit 1
fi
rm -f /usr/sbin/proxsmtpd
dpkg-divert --local --rename --remove /usr/sbin/proxsmtpd
diverted=0
rm -f "/etc/proxsmtp/$px.conf"
[ -x /usr/sbin/proxsmtpd ] && [ ! -L /usr/sbin/proxsmtpd ]

step "dpkg -r sluice"
dpkg -r sluice
if pgrep -f '/usr/sbin/sluice-' >/dev/null; then
	pgrep -af '/usr/sbin/sluice-'
	echo "deb-test: sluice processes left running" >&2
	exit 1
fi
for f in /usr/sbin/sluice-edge /usr/sbin/sluice-worker /usr/bin/sluice-replay /lib/systemd/system/sluice-edge@.service; do
	[ ! -e "$f" ] || { echo "deb-test: $f left after dpkg -r" >&2; exit 1; }
done
step "dpkg --purge sluice"
dpkg --purge sluice
[ ! -e /var/lib/sluice ] && [ ! -e /etc/sluice ]
echo "deb-test: ok"
