#!/bin/sh
# sluice's postrm: purge removes the stored messages and settings; the
# _sluice user stays (Debian's policy for system users: files it owned may
# remain elsewhere).
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/sluice /etc/sluice
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
