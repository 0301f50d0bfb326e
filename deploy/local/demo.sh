#!/usr/bin/env bash
# `make run`: the edge on its embedded default (NATS, blob store and
# workers in one process) with deploy/examples/proxsmtpd.conf, in front of
# the demo sink on 127.0.0.1:2525. Send it mail on 127.0.0.1:10025, e.g.
#   swaks --server 127.0.0.1:10025 --from alice@example.com --to bob@example.com
# Ctrl-C stops both.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
state=.run
mkdir -p "$state"
bin/sink -listen 127.0.0.1:2525 -dir "$state/sink-mail" &
sink=$!
trap 'kill $sink 2>/dev/null; wait $sink 2>/dev/null' EXIT
echo "demo: sink (pid $sink) stores delivered mail in $state/sink-mail"
echo "demo: try   swaks --server 127.0.0.1:10025 --from alice@example.com --to bob@example.com"
echo "demo: and   swaks --server 127.0.0.1:10025 --from alice@example.com --to bob@example.com --body 'REJECT-ME please'"
bin/edge -d 3 -f deploy/examples/proxsmtpd.conf --data-dir "$state/data" || true
