package config

import (
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in       string
		want     Address
		str      string
		portOnly bool
	}{
		{"127.0.0.1:2525", Address{Network: "tcp", Host: "127.0.0.1", Port: 2525}, "127.0.0.1:2525", false},
		{"127.0.0.1", Address{Network: "tcp", Host: "127.0.0.1", Port: 25}, "127.0.0.1:25", false},
		{"localhost", Address{Network: "tcp", Host: "localhost", Port: 25}, "localhost:25", false},
		{"mx.example.org:587", Address{Network: "tcp", Host: "mx.example.org", Port: 587}, "mx.example.org:587", false},
		{"mail_host-1.example.:25", Address{Network: "tcp", Host: "mail_host-1.example.", Port: 25}, "mail_host-1.example.:25", false},
		{"[::1]:2525", Address{Network: "tcp", Host: "::1", Port: 2525}, "[::1]:2525", false},
		{"[2001:db8::1]", Address{Network: "tcp", Host: "2001:db8::1", Port: 25}, "[2001:db8::1]:25", false},
		{"::1", Address{Network: "tcp", Host: "::1", Port: 25}, "[::1]:25", false},
		{"[fe80::1%eth0]:25", Address{Network: "tcp", Host: "fe80::1%eth0", Port: 25}, "[fe80::1%eth0]:25", false},
		{"10026", Address{Network: "tcp", Port: 10026}, "10026", true},
		{"/run/postfix/smtpd.sock", Address{Network: "unix", Path: "/run/postfix/smtpd.sock"}, "/run/postfix/smtpd.sock", false},
	}
	for _, tt := range tests {
		got, err := ParseAddress(tt.in, 25)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%q: got %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.str {
			t.Errorf("%q: String() = %q, want %q", tt.in, got.String(), tt.str)
		}
		if got.PortOnly() != tt.portOnly {
			t.Errorf("%q: PortOnly() = %v", tt.in, got.PortOnly())
		}
	}
}

func TestParseAddressErrors(t *testing.T) {
	for _, in := range []string{
		"", "0", "70000", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1:", "127.0.0.1:+25",
		"1.2.3.4.5:25", "999.1.1.1", "bogus host", "host name:25", "-bad.example:25",
		"[::1", "[::1]x", "[::1]:", "[127.0.0.1]:25", "[::1]:99999", "::g", "1:2:3",
		"a..b:25", "exa%mple:25", " 127.0.0.1:25", "127.0.0.1:25 ",
		"/" + strings.Repeat("x", unixPathMax), "/a\x00b",
		"[fe80::1%a]b]:25",
	} {
		if a, err := ParseAddress(in, 25); err == nil {
			t.Errorf("%q: accepted as %+v", in, a)
		}
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"127.0.0.1:2525", "localhost", "[::1]:25", "::1", "10026", "/run/x.sock",
		"[fe80::1%eth0]:25", "1.2.3.4.5:25", "mx.example.org.", "0", "[::ffff:1.2.3.4]:1"} {
		f.Add(s, 25)
	}
	f.Fuzz(func(t *testing.T, in string, defaultPort int) {
		if defaultPort < 1 || defaultPort > 65535 {
			defaultPort = 25
		}
		a, err := ParseAddress(in, defaultPort)
		if err != nil {
			return
		}
		switch a.Network {
		case "unix":
			if a.Path != in || a.Host != "" || a.Port != 0 {
				t.Fatalf("%q: %+v", in, a)
			}
		case "tcp":
			if a.Port < 1 || a.Port > 65535 || a.Path != "" {
				t.Fatalf("%q: %+v", in, a)
			}
		default:
			t.Fatalf("%q: network %q", in, a.Network)
		}
		// String reads back to the same address, whatever the default port.
		b, err := ParseAddress(a.String(), 1)
		if err != nil || b != a {
			t.Fatalf("%q -> %q -> %+v, %v; want %+v", in, a.String(), b, err, a)
		}
	})
}
