#!/bin/sh
# sluice's prerm: on removal, stop what runs (an upgrade restarts it in
# postinst instead).
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop sluice.target 'sluice-edge@*.service' sluice-worker.service >/dev/null 2>&1 || true
fi
exit 0
