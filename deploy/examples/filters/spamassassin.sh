#!/bin/sh
# spamassassin.sh: a sluice (and proxsmtpd) pipe filter that passes each
# message through SpamAssassin's spamc.
#
#   FilterType:    pipe
#   FilterCommand: /usr/local/lib/sluice/filters/spamassassin.sh
#
# Ham is delivered with SpamAssassin's X-Spam-* headers added (exit 0).
# Spam is refused at SMTP time with "550 5.7.1 Spam score too high": the
# sender learns that the message did not arrive, and nobody has to sort a
# spam folder. Set SPAM_ACTION=tag to deliver spam with its headers instead
# (the mail server or the user's client then files it).
#
# When spamd cannot be reached the message is delivered unchanged (fail
# open): a spam check is not worth bouncing or delaying legitimate mail.
# Set SPAMC_ON_ERROR=tempfail to defer the message with a 451 instead, so
# that nothing goes through unchecked; senders retry, so no mail is lost
# unless spamd stays down longer than their queue lifetime (days).
#
# Settings (from the worker's environment):
#   SPAM_ACTION     reject (default) or tag
#   SPAMC_ON_ERROR  accept (default) or tempfail
#   SPAMC_ARGS      extra spamc options, e.g. "-d spamd.example -u sluice"
#
# spamc passes messages larger than its size limit (-s, 500 KB by default)
# through unchecked. See docs/filters.md.
#
# Try it by hand:
#   printf 'Subject: test\r\n\r\nhello\r\n' | TMPDIR=/tmp ./spamassassin.sh; echo "exit $?"
#   (the GTUBE test string in a message body scores as spam)
set -eu

action=${SPAM_ACTION:-reject}
on_error=${SPAMC_ON_ERROR:-accept}
spamc_args=${SPAMC_ARGS:-}

msg=
out=
cleanup() {
	rm -f ${msg:+"$msg"} ${out:+"$out"}
}
trap cleanup EXIT
trap 'exit 143' HUP INT TERM

# Keep the original: it is what we deliver when spamc fails.
msg=$(mktemp "${TMPDIR:-/tmp}/spamc-in.XXXXXX")
out=$(mktemp "${TMPDIR:-/tmp}/spamc-out.XXXXXX")
cat >"$msg"

# -E: exit 1 when the message is spam (the output still holds the tagged
#     message).
# -x: exit with an error code when spamd fails, instead of copying the
#     message through silently, so that we can tell the two apart.
status=0
# shellcheck disable=SC2086 # SPAMC_ARGS is a list of options
spamc -E -x $spamc_args <"$msg" >"$out" || status=$?

case $status in
0)
	cat "$out"
	exit 0
	;;
1)
	if [ "$action" = tag ]; then
		cat "$out"
		exit 0
	fi
	printf '550 5.7.1 Spam score too high\n' >&2
	exit 1
	;;
*)
	# spamc reports its own failures with codes 64-78 (sysexits.h);
	# 126/127 mean spamc itself is missing.
	if [ "$on_error" = tempfail ]; then
		printf '451 4.7.1 Spam filter unavailable\n' >&2
		exit 1
	fi
	printf 'spamassassin.sh: spamc failed (exit %s), delivering unchecked\n' "$status" >&2
	cat "$msg"
	exit 0
	;;
esac
