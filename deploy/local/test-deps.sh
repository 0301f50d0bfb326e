#!/usr/bin/env bash
# Installs the third-party software sluice's tests run against, when it is
# missing: swaks (with Net::SSLeay for TLS), openssl, HAProxy, nftables, Chromium, and Postfix (Debian packages: smtp-sink/smtp-source, and
# postfix, postcat, postsuper and master for internal/postfixtest's real
# instance), versitygw (a real S3 server) and nats-server (for JetStream
# clusters).
# Idempotent; safe to run on every `make test`.
set -euo pipefail

# Build with the Go toolchain sluice pins (the Makefile exports it; run on
# its own, this script takes it from go.mod's toolchain line).
case "${GOTOOLCHAIN:-}" in
  go1.*) ;;
  *) GOTOOLCHAIN=$(sed -n 's/^toolchain //p' "$(dirname "$0")/../../go.mod"); export GOTOOLCHAIN ;;
esac
GOBIN="$(go env GOPATH)/bin"
export PATH="$PATH:$GOBIN:/usr/sbin"
VERSITYGW_VERSION=v1.8.0
NATS_SERVER_VERSION=v2.15.2

need_apt=()
command -v swaks >/dev/null || need_apt+=(swaks)
# swaks speaks TLS through Net::SSLeay; openssl s_client tests STARTTLS too.
perl -MNet::SSLeay -e1 2>/dev/null || need_apt+=(libnet-ssleay-perl)
command -v openssl >/dev/null || need_apt+=(openssl)
# HAProxy, for the PROXY protocol in front of the edge.
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# go-md2man, for the Debian package's man pages (make deb); man and
# systemd-analyze, which make deb-test runs on the installed package.
command -v go-md2man >/dev/null || need_apt+=(go-md2man)
command -v man >/dev/null || need_apt+=(man-db)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# Debian's proxsmtp: the daemon sluice replaces (make deb-test runs its
# unit's ExecStart and its init script with sluice-edge in its place;
# make bench measures it beside the edge).
[ -x /usr/sbin/proxsmtpd ] || need_apt+=(proxsmtp)
# Milters (issue 11): OpenDKIM signs, opendkim-genkey makes the test's
# key, dkimpy (python3-dkim, for Debian's /usr/bin/python3) verifies.
command -v opendkim >/dev/null || [ -x /usr/sbin/opendkim ] || need_apt+=(opendkim)
command -v opendkim-genkey >/dev/null || [ -x /usr/sbin/opendkim-genkey ] || need_apt+=(opendkim-tools)
/usr/bin/python3 -c 'import dkim' 2>/dev/null || need_apt+=(python3-dkim)
# spamass-milter in front of spamd (SpamAssassin's rules ship with it).
command -v spamd >/dev/null || [ -x /usr/sbin/spamd ] || need_apt+=(spamd)
command -v spamass-milter >/dev/null || [ -x /usr/sbin/spamass-milter ] || need_apt+=(spamass-milter)
# rspamd, whose proxy worker speaks milter (the test runs its own instance).
command -v rspamd >/dev/null || [ -x /usr/bin/rspamd ] || need_apt+=(rspamd)
# Chromium, headless, for the replay HTML report's browser test; a font,
# so that its screenshot has letters in it (--no-install-recommends leaves
# chromium without fonts-liberation).
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need_apt+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || need_apt+=(fonts-dejavu-core)
# nftables and iproute2, for TransparentProxy between network namespaces.
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need_apt+=(nftables)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
# postfix_ready: Postfix's commands, and its daemons (master, smtpd,
# cleanup, ...) in daemon_directory, as internal/postfixtest runs them.
postfix_ready() {
  local tool
  for tool in smtp-sink smtp-source postfix postconf postcat postsuper; do
    command -v "$tool" >/dev/null || return 1
  done
  [ -x "$(postconf -d -h daemon_directory)/master" ]
}
postfix_ready || need_apt+=(postfix)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
  fi
  if [ "$sudo" = none ]; then
    echo "test-deps: missing ${need_apt[*]}; install them with: apt-get install -y ${need_apt[*]}" >&2
    if [ "${SLUICE_REQUIRE_TOOLS:-}" = 1 ]; then exit 1; fi
  else
    echo "test-deps: installing ${need_apt[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1 || {
      $sudo apt-get update >/dev/null
      $sudo apt-get install -y --no-install-recommends "${need_apt[@]}" >/dev/null
    }
  fi
fi

if ! postfix_ready; then
  echo "test-deps: Postfix's programs are still missing after installing postfix" >&2
  if [ "${SLUICE_REQUIRE_TOOLS:-}" = 1 ]; then exit 1; fi
fi

# Go-installed servers: pinned versions, into GOPATH/bin.
gover() { go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'; }
if [ "$(gover "$GOBIN/versitygw")" != "$VERSITYGW_VERSION" ]; then
  echo "test-deps: installing versitygw $VERSITYGW_VERSION (takes a few minutes the first time)"
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
if [ "$(gover "$GOBIN/nats-server")" != "$NATS_SERVER_VERSION" ]; then
  echo "test-deps: installing nats-server $NATS_SERVER_VERSION"
  go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
fi
echo "test-deps: swaks, openssl, haproxy, postfix, versitygw $VERSITYGW_VERSION, nats-server $NATS_SERVER_VERSION ready"
