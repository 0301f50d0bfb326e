#!/bin/sh
# Pipe-mode filter for the interop tests: a word in the message picks the
# verdict, as a content scanner would.
#   INTEROP-REJECT   -> 550 (rejected)
#   INTEROP-DROP     -> 250 (silently dropped)
#   INTEROP-TEMPFAIL -> 451 (try again later)
#   anything else    -> delivered unchanged
set -eu
tmp=$(mktemp "${TMPDIR:-/tmp}/interop-filter.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat >"$tmp"
if grep -q INTEROP-REJECT "$tmp"; then
	echo "550 5.7.1 interop: rejected by the filter" >&2
	exit 1
fi
if grep -q INTEROP-DROP "$tmp"; then
	echo "250 2.0.0 interop: dropped by the filter" >&2
	exit 1
fi
if grep -q INTEROP-TEMPFAIL "$tmp"; then
	echo "451 4.7.1 interop: try again later" >&2
	exit 1
fi
cat "$tmp"
