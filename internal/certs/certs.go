// Package certs keeps the edge's TLS certificate: loaded at start-up,
// read again on Reload (SIGHUP) and when its files change, so that a
// renewed certificate (ACME) needs no restart. A new pair that does not
// load keeps the old one in use, and says why.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Store holds the certificate in use.
type Store struct {
	certFile, keyFile string
	log               *slog.Logger

	cur atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // one load at a time
	stamp string     // the files' sizes and times at the last load
}

// Load reads the pair; an error names the file and why.
func Load(certFile, keyFile string, log *slog.Logger) (*Store, error) {
	s := &Store{certFile: certFile, keyFile: keyFile, log: log}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the pair again. On failure the certificate in use stays,
// and the error says why.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Noted whatever the outcome: a broken pair is reported once per
	// change, not at every look.
	s.stamp = s.stampOf()
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("tls.cert_file %s, tls.key_file %s: %w", s.certFile, s.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls.cert_file %s: %w", s.certFile, err)
		}
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return fmt.Errorf("tls.cert_file %s: expired on %s", s.certFile, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	s.cur.Store(&cert)
	return nil
}

// reloadLogged is Reload with its outcome logged.
func (s *Store) reloadLogged(why string) {
	if err := s.Reload(); err != nil {
		s.log.Error("TLS certificate not reloaded; keeping the one in use", "why", why, "err", err)
		return
	}
	leaf := s.cur.Load().Leaf
	s.log.Info("TLS certificate loaded", "why", why, "subject", leaf.Subject.String(), "not_after", leaf.NotAfter)
}

// stampOf sums up the files' sizes and modification times; a change
// means a renewal (or a half-written one, which Reload refuses).
func (s *Store) stampOf() string {
	stamp := ""
	for _, f := range []string{s.certFile, s.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			stamp += "missing;"
			continue
		}
		stamp += fmt.Sprintf("%d@%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp
}

// Watch reloads the pair when its files change, checking every interval,
// and on every value from hup (SIGHUP), until ctx ends.
func (s *Store) Watch(ctx context.Context, every time.Duration, hup <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			s.reloadLogged("reload requested")
		case <-t.C:
			s.mu.Lock()
			changed := s.stampOf() != s.stamp
			s.mu.Unlock()
			if changed {
				s.reloadLogged("files changed")
			}
		}
	}
}

// Config is the server-side TLS configuration: the certificate in use
// for every handshake, TLS 1.2 at least.
func (s *Store) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load(), nil
		},
	}
}

// Leaf is the certificate in use.
func (s *Store) Leaf() *x509.Certificate { return s.cur.Load().Leaf }
