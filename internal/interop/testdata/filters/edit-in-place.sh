#!/bin/sh
# File-mode filter for the interop tests: edits the message in the file
# named by $EMAIL in place, the way many real filters do (sed -i writes a
# new file and renames it over the old one), and appends a body line.
set -eu
sed -i 's/^Subject: /Subject: [edited] /' "$EMAIL"
printf 'edited-by: interop file-mode filter\r\n' >>"$EMAIL"
