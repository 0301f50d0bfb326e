package config

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// credsFile is the layout of a NATS credentials file (nsc writes it so).
const credsFile = `-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJ0ZXN0In0.c2lnbmF0dXJl
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY
------END USER NKEY SEED------

*************************************************************
`

func TestSecrets(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "worker.creds")
	nkey := filepath.Join(dir, "worker.nk")
	tlsKey := filepath.Join(dir, "client.key")
	for name, body := range map[string]string{
		creds:  credsFile,
		nkey:   "SUAOTHERSEEDOTHERSEEDOTHERSEEDOTHERSEEDOTHERSEEDOTHERSE\n",
		tlsKey: "-----BEGIN PRIVATE KEY-----\n",
	} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := writeConf(t, "proxsmtpd.conf", "OutAddress: 2525\n")
	c := mustLoad(t, Worker, []string{"-f", p, "--nats-url", "nats://127.0.0.1:4222"}, []string{
		"HOME=/home/u",
		"SLUICE_NATS_USER=worker",
		"SLUICE_NATS_PASSWORD=nats-password",
		"SLUICE_NATS_TOKEN=nats-token",
		"SLUICE_NATS_CREDS_FILE=" + creds,
		"SLUICE_NATS_NKEY_FILE=" + nkey,
		"SLUICE_NATS_TLS_CERT=" + tlsKey,
		"SLUICE_NATS_TLS_KEY=" + tlsKey,
		"SLUICE_STORE_S3_ENDPOINT=s3.example:9000",
		"SLUICE_STORE_S3_SECRET_KEY=s3-secret",
		"AWS_ACCESS_KEY_ID=aws-access-key",
		"AWS_SESSION_TOKEN=aws-session-token",
	})
	got := c.Secrets()
	want := []string{
		"aws-access-key", "s3-secret", "aws-session-token",
		"nats-password", "nats-token",
		nkey, creds, tlsKey,
		"SUAOTHERSEEDOTHERSEEDOTHERSEEDOTHERSEEDOTHERSEEDOTHERSE",
		"eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJ0ZXN0In0.c2lnbmF0dXJl",
		"SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Secrets() = %q\nwant %q", got, want)
	}

	// Nothing configured: nothing to hide, and no empty string that would
	// match every empty variable.
	c = mustLoad(t, Worker, []string{"-f", p, "--nats-url", "nats://127.0.0.1:4222"}, []string{"HOME=/home/u"})
	if s := c.Secrets(); len(s) != 0 {
		t.Errorf("Secrets() = %q, want none", s)
	}
}

func FuzzKeyTokens(f *testing.F) {
	f.Add([]byte(credsFile))
	f.Add([]byte("SUAOTHERSEED\r\n\r\n"))
	f.Add([]byte("---------------------\n*****************\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, tok := range keyTokens(data) {
			if len(tok) < minSecretToken || !hasAlnum([]byte(tok)) {
				t.Errorf("token %q too short or without a letter or digit", tok)
			}
			if bytes.ContainsAny([]byte(tok), " \t\v\f\r\n") {
				t.Errorf("token %q has a blank", tok)
			}
			if !bytes.Contains(data, []byte(tok)) {
				t.Errorf("token %q is not in the input", tok)
			}
		}
	})
}
