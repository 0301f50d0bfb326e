#!/usr/bin/env bash
# CI check of the Debian package (make deb-test; as root, on a machine
# where nothing else uses it): install it with dpkg -i, check the
# binaries, man pages and units, run an instance exactly as
# sluice-edge@.service's ExecStart says, as the package's user with the
# directories systemd would give it, send a message through it to
# smtp-sink, stop it, remove the package, and check that nothing of it is
# left running or installed.
set -euo pipefail
deb=${1:?usage: deb-test.sh PACKAGE.deb}
[ "$(id -u)" = 0 ] || { echo "deb-test: needs root (it installs a package)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin"
inst=sluicecitest
port_edge=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port_sink=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
chmod 0755 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -f "/etc/proxsmtp/$inst.conf"
	rm -rf "$work"
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

step "stop (SIGTERM, as systemctl stop), then dpkg -r sluice"
kill -TERM "$edge"
wait "$edge" || true
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
