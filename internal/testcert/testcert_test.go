package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestGenerateTLS(t *testing.T) {
	a, err := GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool := func(f TLSFiles) *x509.CertPool {
		p := x509.NewCertPool()
		pem, err := os.ReadFile(f.CA)
		if err != nil || !p.AppendCertsFromPEM(pem) {
			t.Fatalf("CA %s: %v", f.CA, err)
		}
		return p
	}
	leaf := func(cert, key string) *x509.Certificate {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		return kp.Leaf
	}
	srv := leaf(a.ServerCert, a.ServerKey)
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(a), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("server certificate for 127.0.0.1: %v", err)
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool(b), DNSName: "127.0.0.1"}); err == nil {
		t.Error("another CA trusts the server certificate")
	}
	cli := leaf(a.ClientCert, a.ClientKey)
	if _, err := cli.Verify(x509.VerifyOptions{Roots: pool(a), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
}
