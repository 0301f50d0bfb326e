package certs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/testcert"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(to+".new", to); err != nil { // as certbot's deploy hooks do
		t.Fatal(err)
	}
}

// A renewed pair is picked up when its files change and on SIGHUP; a
// broken one keeps the pair in use and is logged.
func TestReload(t *testing.T) {
	a, err := testcert.GenerateTLS(filepath.Join(t.TempDir(), "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := testcert.GenerateTLS(filepath.Join(t.TempDir(), "b"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	copyFile(t, a.ServerCert, cert)
	copyFile(t, a.ServerKey, key)
	var logs bytes.Buffer
	s, err := Load(cert, key, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first := s.Leaf().SerialNumber
	got, err := s.Config().GetCertificate(nil)
	if err != nil || got.Leaf.SerialNumber.Cmp(first) != 0 {
		t.Fatalf("GetCertificate: %v %v", got, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); s.Watch(ctx, 20*time.Millisecond, hup) }()

	copyFile(t, b.ServerCert, cert)
	copyFile(t, b.ServerKey, key)
	waitFor(t, "the renewed certificate", func() bool { return s.Leaf().SerialNumber.Cmp(first) != 0 })
	second := s.Leaf().SerialNumber

	// A half-written renewal: the old pair stays.
	if err := os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup <- struct{}{}
	hup <- struct{}{} // the first is handled once the second is taken
	if s.Leaf().SerialNumber.Cmp(second) != 0 {
		cancel()
		t.Fatal("a broken pair replaced the one in use")
	}
	if err := s.Reload(); err == nil {
		t.Error("Reload of a broken pair succeeded")
	}

	// Back to the first pair, on SIGHUP (the watcher is too slow to
	// see it first).
	cancel()
	<-done
	copyFile(t, a.ServerCert, cert)
	copyFile(t, a.ServerKey, key)
	go s.Watch(t.Context(), time.Hour, hup)
	hup <- struct{}{}
	hup <- struct{}{}
	if s.Leaf().SerialNumber.Cmp(first) != 0 {
		t.Error("SIGHUP did not reload the pair")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
	}
}

// Load refuses what cannot be served, naming the setting.
func TestLoadErrors(t *testing.T) {
	f, err := testcert.GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(f.ServerCert, f.ClientKey, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a key that does not match was accepted")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.pem"), f.ServerKey, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a missing file was accepted")
	}
}
