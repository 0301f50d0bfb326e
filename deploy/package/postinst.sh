#!/bin/sh
# sluice's postinst: the system user and its directories. Nothing is
# enabled or started: the operator chooses which instances run
# (systemctl enable --now sluice-edge@NAME).
set -e

if ! getent passwd _sluice >/dev/null; then
	adduser --system --group --no-create-home --home /nonexistent \
		--gecos "sluice SMTP filter" _sluice >/dev/null
fi
install -d -m 0755 -o root -g root /etc/sluice
# 0755: each instance's directory below is its own user's, 0700 (an
# instance of Debian's proxsmtp started as root gives its to _proxsmtp).
install -d -m 0755 -o _sluice -g _sluice /var/lib/sluice
# Secrets may go in the env files: readable by root (systemd reads them).
chmod 0600 /etc/sluice/sluice.env 2>/dev/null || true

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# An upgrade restarts what was running, and nothing else.
	if [ "$1" = configure ] && [ -n "$2" ]; then
		systemctl try-restart 'sluice-edge@*.service' sluice-worker.service >/dev/null 2>&1 || true
	fi
fi
exit 0
