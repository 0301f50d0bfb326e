#!/usr/bin/env bash
# Runs the team's proxsmtpd differential oracle (../shared/compat) against
# an edge binary: `compare` on the scenarios where sluice must behave like
# proxsmtpd 1.10, `expect` where it must do better. Exit status 1 if either
# fails. The oracle lives outside the repository (SLUICE_COMPAT_DIR,
# default ../shared/compat); without it the check is skipped with a
# notice, unless SLUICE_COMPAT_REQUIRED=1 (CI sets it where the oracle is).
# docs/behaviour.md says what the edge does and where it differs.
set -uo pipefail
edge=${1:?usage: compat.sh /path/to/edge}
here=$(cd "$(dirname "$0")/../.." && pwd)
compat=${SLUICE_COMPAT_DIR:-$here/../shared/compat}
if [ ! -x "$compat/oracle.py" ]; then
  if [ "${SLUICE_COMPAT_REQUIRED:-0}" = 1 ]; then
    echo "compat: no oracle at $compat (set SLUICE_COMPAT_DIR)" >&2
    exit 1
  fi
  echo "compat: oracle not found at $compat; skipped (set SLUICE_COMPAT_DIR, or SLUICE_COMPAT_REQUIRED=1 to fail instead)" >&2
  exit 0
fi
cd "$compat"

# oracle OUT ARGS... runs the oracle into OUT. The harness picks free
# ports by binding and releasing them, and with four scenarios at a time
# another process can take one first ("harness error: ... Address already
# in use"); such a run is repeated once. A real difference fails at once.
oracle() {
  local out=$1; shift
  ./oracle.py "$@" > "$out" 2>&1 && return 0
  grep -q 'Address already in use' "$out" || return 1
  echo "compat: the harness lost a port race; running again" >&2
  ./oracle.py "$@" > "$out" 2>&1
}

rc=0
echo "== oracle compare (must match proxsmtpd 1.10)"
oracle /tmp/sluice-compat-compare.$$ compare --ref baseline/proxsmtpd-1.10.json --cand "$edge -d 3 -f {conf}" \
  --exclude-tags quirk security barelf -j 4 || rc=1
grep -E '^\[DIFF\]' /tmp/sluice-compat-compare.$$ || true
tail -n 1 /tmp/sluice-compat-compare.$$
echo "== oracle expect (must do better than proxsmtpd)"
oracle /tmp/sluice-compat-expect.$$ expect --cand "$edge -d 3 -f {conf}" -j 4 || rc=1
grep -E '^\[FAIL\]' -A 6 /tmp/sluice-compat-expect.$$ || true
tail -n 1 /tmp/sluice-compat-expect.$$
rm -f /tmp/sluice-compat-compare.$$ /tmp/sluice-compat-expect.$$
exit $rc
