package session

import (
	"context"
	"crypto/tls"
	"time"

	"github.com/sluice-mail/sluice/internal/wire"
)

// upstreamTLS starts TLS with the upstream, when configured, before the
// client is greeted: the whole relayed dialog then runs inside it. The
// client is told nothing of why it failed; the log is.
func (s *Session) upstreamTLS() error {
	if s.cfg.UpstreamTLS == nil {
		return nil
	}
	offered, err := s.up.StartTLS(s.cfg.Hostname, s.cfg.UpstreamTLS)
	switch {
	case err != nil:
		s.log.Warn("TLS to the upstream failed", "err", err)
	case !offered && s.cfg.UpstreamTLSRequired:
		s.log.Warn("the upstream offers no STARTTLS, and upstream.tls is required")
		s.up.Quit()
	case !offered:
		s.log.Debug("the upstream offers no STARTTLS; relaying in clear")
		return nil
	default:
		st := s.up.TLS()
		s.log.Debug("TLS to the upstream", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
		return nil
	}
	s.reply(s.closingReply(closeUpstreamTLS))
	return errStop
}

// handshakeTimeout bounds a TLS handshake when TimeOut does not.
const handshakeTimeout = 5 * time.Minute

// startTLS performs STARTTLS (RFC 3207) with the edge's own certificate;
// it is never relayed. Afterwards the session starts over: the client
// must greet again, and nothing learnt before counts.
func (s *Session) startTLS(cmd wire.Command) error {
	switch {
	case s.tls != nil:
		return s.refuse(replyTLSActive)
	case cmd.Arg != "":
		return s.refuse(replyTLSSyntax)
	}
	if s.cr.Buffered() > 0 || pendingInput(s.conn) {
		// Commands sent in clear behind STARTTLS would be read as if they
		// came through TLS (CVE-2011-0411): discard them and end here.
		s.log.Warn("client pipelined commands after STARTTLS; discarded", "bytes", s.cr.Buffered())
		_, _ = s.cr.Discard(s.cr.Buffered())
		s.limit(LimitTLSPipelined)
		s.reply(replyTLSPipelined)
		s.up.Quit()
		return errStop
	}
	if err := s.reply(replyStartTLS); err != nil {
		return err
	}
	timeout := s.cfg.TimeOut
	if timeout <= 0 {
		timeout = handshakeTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tc := tls.Server(s.conn, s.cfg.TLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		s.log.Info("TLS handshake failed", "err", err)
		s.up.Quit()
		return errStop
	}
	s.tlsConn, s.tls = tc, tlsInfo(tc.ConnectionState())
	s.cr.Reset(s.client)
	s.cw.Reset(s.client)
	s.log.Info("TLS established", "version", s.tls.Version, "cipher", s.tls.Cipher)
	// RFC 3207 4.2: everything the client said before is forgotten.
	s.txn.reset()
	s.greeted, s.helo, s.heloVerb, s.offered = false, "", "", nil
	return nil
}
