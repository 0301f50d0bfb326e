package wire

import (
	"reflect"
	"testing"
)

func TestVerb(t *testing.T) {
	cases := []struct{ line, verb, arg string }{
		{"MAIL FROM:<a>", "MAIL", "FROM:<a>"},
		{"data now", "DATA", "now"},
		{"data", "DATA", ""},
		{"DATA ", "DATA", ""},
		{"QUIT\t", "QUIT", ""},
		{"rcpt   to:<b>  \t", "RCPT", "to:<b>"},
		{"", "", ""},
		{"ehlo client.example", "EHLO", "client.example"},
		{"nOoP é", "NOOP", "é"},
	}
	for _, tc := range cases {
		if v, a := Verb(tc.line); v != tc.verb || a != tc.arg {
			t.Errorf("Verb(%q) = %q, %q; want %q, %q", tc.line, v, a, tc.verb, tc.arg)
		}
	}
}

func TestMailRcptPath(t *testing.T) {
	cases := []struct {
		line string
		mail bool // MailPath, else RcptPath
		addr string
		ok   bool
	}{
		{"MAIL FROM:<alice@example.com>", true, "alice@example.com", true},
		{"mail from: <alice@example.com>", true, "alice@example.com", true},
		{"MAIL FROM:<>", true, "<>", true},
		{"MAIL FROM:<> SIZE=10", true, "<>", true},
		{"MAIL FROM:<> ", true, "<>", true},
		{"MAIL FROM:< >", true, "<>", true},
		{"MAIL FROM:alice@example.com SIZE=10", true, "alice@example.com", true}, // d07
		{"MAIL FROM:<Dave@Example.COM> BODY=8BITMIME", true, "Dave@Example.COM", true},
		{"MAIL FROM:<a@b", true, "a@b", true},
		{"MAIL FROM:<a\x01b@c>", true, "ab@c", true},
		{"MAIL FROM:", true, "", true},
		{"MAIL TO:<a>", true, "", false},
		{"MAILFROM:<a>", true, "", false},
		{"RCPT TO:<a>", true, "", false},
		{"rcpt to: carol@example.com", false, "carol@example.com", true}, // d06
		{"RCPT TO:<Dave@Example.COM> NOTIFY=NEVER", false, "Dave@Example.COM", true},
		{"RCPT TO:<bob@example.com>", false, "bob@example.com", true},
		{"RCPT TO:<@relay.example:bob@example.com>", false, "@relay.example:bob@example.com", true},
		{"RCPT TO:<>", false, "<>", true},
		{"RCPT FROM:<a>", false, "", false},
		{"MAIL FROM:<a>", false, "", false},
	}
	for _, tc := range cases {
		f, name := RcptPath, "RcptPath"
		if tc.mail {
			f, name = MailPath, "MailPath"
		}
		if addr, ok := f(tc.line); addr != tc.addr || ok != tc.ok {
			t.Errorf("%s(%q) = %q, %v; want %q, %v", name, tc.line, addr, ok, tc.addr, tc.ok)
		}
	}
}

func TestParseXForward(t *testing.T) {
	cases := []struct {
		arg  string
		want map[string]string
	}{
		{"NAME=remote.example ADDR=192.0.2.10 HELO=remote-helo.example", // d02
			map[string]string{"NAME": "remote.example", "ADDR": "192.0.2.10", "HELO": "remote-helo.example"}},
		{"NAME=remote.example ADDR=[192.0.2.11]", map[string]string{"NAME": "remote.example", "ADDR": "192.0.2.11"}},       // d04
		{"HELO=split-helo.example PROTO=ESMTP", map[string]string{"HELO": "split-helo.example", "PROTO": "ESMTP"}},         // d04
		{"HELO=first-helo.example ADDR=192.0.2.14", map[string]string{"HELO": "first-helo.example", "ADDR": "192.0.2.14"}}, // d05
		{"HELO=first-helo.example ADDR=192.0.2.14\r\n", map[string]string{"HELO": "first-helo.example", "ADDR": "192.0.2.14"}},
		{"NAME=mail.helo.example HELO=real-helo.example", map[string]string{"NAME": "mail.helo.example", "HELO": "real-helo.example"}}, // d09
		{"ADDR=IPV6:2001:db8::25 PROTO=ESMTP", map[string]string{"ADDR": "2001:db8::25", "PROTO": "ESMTP"}},                            // d10
		{"addr=[ipv6:2001:db8::1] helo=x", map[string]string{"ADDR": "2001:db8::1", "HELO": "x"}},
		{"NAME=[UNAVAILABLE] ADDR=[TEMPUNAVAIL] HELO=UNAVAILABLE PROTO=tempunavail", map[string]string{}},
		{"HELO=a+20b+3Dc NAME=x+2", map[string]string{"HELO": "a b=c", "NAME": "x+2"}},
		{"HELO=evil+0D+0AX NAME=ok ADDR=1\x01", map[string]string{"NAME": "ok"}},
		{"HELO= NAME ADDR==1 FOO=bar =x", map[string]string{"ADDR": "=1"}},
		{"HELO=a HELO=b", map[string]string{"HELO": "b"}},
		{"SOURCE=REMOTE IDENT=abc+2B PORT=2525", map[string]string{"SOURCE": "REMOTE", "IDENT": "abc+", "PORT": "2525"}},
		{"", map[string]string{}},
	}
	for _, tc := range cases {
		if got := ParseXForward(tc.arg); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseXForward(%q) = %q, want %q", tc.arg, got, tc.want)
		}
	}
}
