#!/bin/sh
# clamav.sh: a sluice (and proxsmtpd) pipe filter that scans each message
# with ClamAV.
#
#   FilterType:    pipe
#   FilterCommand: /usr/local/lib/sluice/filters/clamav.sh
#
# The message arrives on stdin and, when it is clean, leaves unchanged on
# stdout (exit 0). An infected message is refused with a 550, and when the
# scanner cannot give an answer the message is deferred with a 451, so the
# sender retries and nothing is lost. See docs/filters.md.
#
# Settings (from the worker's environment):
#   CLAMAV_SCANNER  the scanner: clamdscan (default, asks a running clamd)
#                   or clamscan (loads the signatures for every message:
#                   slow, for trying things out only).
#
# Try it by hand:
#   printf 'Subject: test\r\n\r\nhello\r\n' | TMPDIR=/tmp ./clamav.sh; echo "exit $?"
#   curl -s https://secure.eicar.org/eicar.com.txt | TMPDIR=/tmp ./clamav.sh; echo "exit $?"
set -eu

scanner=${CLAMAV_SCANNER:-clamdscan}

msg=
cleanup() {
	if [ -n "$msg" ]; then
		rm -f "$msg"
	fi
}
trap cleanup EXIT
# On a timeout sluice sends SIGTERM: exit through the EXIT trap so the
# copy of the message does not stay behind.
trap 'exit 143' HUP INT TERM

# The message goes to a private file (mktemp makes it 0600) in $TMPDIR,
# which sluice sets to its TempDirectory.
msg=$(mktemp "${TMPDIR:-/tmp}/clamav.XXXXXX")
cat >"$msg"

# The scanner reads the message on its stdin ("-"): clamdscan streams it
# to clamd, which therefore needs no access to our private file.
status=0
report=$("$scanner" --no-summary --stdout - <"$msg" 2>&1) || status=$?

case $status in
0)
	# Clean: deliver the message unchanged.
	cat "$msg"
	exit 0
	;;
1)
	# Infected. The report reads "stdin: Eicar-Test-Signature FOUND".
	name=$(printf '%s\n' "$report" | sed -n 's/^.*: \(.*\) FOUND$/\1/p' | head -n 1)
	printf '550 5.7.1 Virus found: %s\n' "${name:-unknown}" >&2
	exit 1
	;;
*)
	# 2 is a scanner error (clamd down, unreadable database...), 126 and
	# 127 a missing scanner. Defer rather than let mail through unscanned.
	printf '%s\n' "$report" | head -n 5 | sed 's/^/clamav.sh: /' >&2
	printf '451 4.7.1 Virus scanner unavailable\n' >&2
	exit 1
	;;
esac
