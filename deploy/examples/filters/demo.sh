#!/bin/sh
# Demo filter for `make run`: refuses any message that contains the word
# REJECT-ME, and tags the subject of every other one. A pipe-mode filter
# reads the message on stdin and writes the message to deliver on stdout.
set -eu
tmp=$(mktemp "${TMPDIR:-/tmp}/demo-filter.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
if grep -q 'REJECT-ME' "$tmp"; then
	echo "550 5.7.1 Rejected by the demo filter: message contains REJECT-ME" >&2
	exit 1
fi
sed 's/^Subject: /Subject: [filtered by sluice] /' "$tmp"
