package wire

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	cases := []struct{ line, verb, arg, out string }{
		{"MAIL FROM:<a>", "MAIL", "FROM:<a>", "MAIL FROM:<a>"},
		{"data now", "DATA", "now", "data now"},
		{"data", "DATA", "", "data"},
		{"DATA ", "DATA", "", "DATA "},
		{"QUIT\t", "QUIT", "", "QUIT"},
		{"rcpt   to:<b>  \t", "RCPT", "to:<b>", "rcpt   to:<b>  \t"},
		{"noop  a  b  ", "NOOP", "a  b", "noop  a  b  "}, // behaviour.md#commands: relayed byte for byte
		{"", "", "", ""},
		{"ehlo client.example", "EHLO", "client.example", "ehlo client.example"},
		{"nOoP é", "NOOP", "é", "nOoP é"},
		// Hidden verbs (issue 6): Postfix skips leading whitespace and
		// splits at any space or tab, and so does the edge.
		{" RSET", "RSET", "", "RSET"},
		{"\t XCLIENT ADDR=10.9.9.9", "XCLIENT", "ADDR=10.9.9.9", "XCLIENT ADDR=10.9.9.9"},
		{"XCLIENT\tADDR=10.9.9.9", "XCLIENT", "ADDR=10.9.9.9", "XCLIENT ADDR=10.9.9.9"},
		{"MAIL\tFROM:<s@evil.test>", "MAIL", "FROM:<s@evil.test>", "MAIL FROM:<s@evil.test>"},
		{"RCPT\t \tTO:<x@local.test>\t", "RCPT", "TO:<x@local.test>", "RCPT TO:<x@local.test>"},
		{"XFORWARD\tADDR=1.2.3.4\tHELO=x", "XFORWARD", "ADDR=1.2.3.4\tHELO=x", "XFORWARD ADDR=1.2.3.4\tHELO=x"},
	}
	for _, tc := range cases {
		c := ParseCommand(tc.line)
		if c.Verb != tc.verb || c.Arg != tc.arg || c.Line != tc.out {
			t.Errorf("ParseCommand(%q) = %+v; want %q, %q, %q", tc.line, c, tc.verb, tc.arg, tc.out)
		}
		if v, a := Verb(tc.line); v != tc.verb || a != tc.arg {
			t.Errorf("Verb(%q) = %q, %q", tc.line, v, a)
		}
		// The relayed line reads the same again: one command, one meaning.
		if again := ParseCommand(c.Line); again.Verb != c.Verb || again.Arg != c.Arg || again.Line != c.Line {
			t.Errorf("ParseCommand(%q) = %+v, but its Line reads %+v", tc.line, c, again)
		}
	}
}

func TestParsePath(t *testing.T) {
	cases := []struct {
		arg    string
		mail   bool // ParseMail, else ParseRcpt
		addr   string
		params []string
		out    string // Arg()
		err    error
	}{
		{"FROM:<alice@example.com>", true, "alice@example.com", nil, "FROM:<alice@example.com>", nil},
		{"from: <alice@example.com>", true, "alice@example.com", nil, "from:<alice@example.com>", nil},
		{"FROM:<>", true, "<>", nil, "FROM:<>", nil},
		{"FROM:<> SIZE=10", true, "<>", []string{"SIZE=10"}, "FROM:<> SIZE=10", nil},
		{"FROM:< >", true, "<>", nil, "FROM:<>", nil},
		{"FROM:alice@example.com SIZE=10", true, "alice@example.com", []string{"SIZE=10"}, "FROM:alice@example.com SIZE=10", nil}, // d07
		{"FROM:<Dave@Example.COM> BODY=8BITMIME\tSMTPUTF8", true, "Dave@Example.COM", []string{"BODY=8BITMIME", "SMTPUTF8"},
			"FROM:<Dave@Example.COM> BODY=8BITMIME SMTPUTF8", nil},
		{`FROM:<"a>b c"@local.test>`, true, `"a>b c"@local.test`, nil, `FROM:<"a>b c"@local.test>`, nil},
		{`FROM:<"a\"b"@x>`, true, `"a\"b"@x`, nil, `FROM:<"a\"b"@x>`, nil},
		{"FROM:<üser@bücher.example> SMTPUTF8", true, "üser@bücher.example", []string{"SMTPUTF8"}, "FROM:<üser@bücher.example> SMTPUTF8", nil},
		{"FROM:<a@[192.0.2.1]>", true, "a@[192.0.2.1]", nil, "FROM:<a@[192.0.2.1]>", nil},
		{"FROM:<a@[IPv6:2001:db8::1]>", true, "a@[IPv6:2001:db8::1]", nil, "FROM:<a@[IPv6:2001:db8::1]>", nil},
		{"TO:<postmaster>", false, "postmaster", nil, "TO:<postmaster>", nil},
		{"to: carol@example.com", false, "carol@example.com", nil, "to:carol@example.com", nil},
		{"TO:<Dave@Example.COM> NOTIFY=NEVER ORCPT=rfc822;d+2B@x", false, "Dave@Example.COM", []string{"NOTIFY=NEVER", "ORCPT=rfc822;d+2B@x"},
			"TO:<Dave@Example.COM> NOTIFY=NEVER ORCPT=rfc822;d+2B@x", nil},
		{"TO:<@relay.example,@b.example:bob@example.com>", false, "bob@example.com", nil, "TO:<bob@example.com>", nil},
		{"TO:<>", false, "<>", nil, "TO:<>", nil},

		{"FROM:<a@b", true, "", nil, "", ErrAddrSyntax},
		{"FROM:", true, "", nil, "", ErrPathSyntax},
		{"FROM: ", true, "", nil, "", ErrPathSyntax},
		{"TO:<a>", true, "", nil, "", ErrPathSyntax},
		{"FROM <a>", true, "", nil, "", ErrPathSyntax},
		{"FROM:<a> <b>", true, "", nil, "", ErrPathSyntax},
		{"FROM:<a>x", true, "", nil, "", ErrAddrSyntax},
		{"TO:<a@b>,<c@d>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a b@c>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a<b@c>", false, "", nil, "", ErrAddrSyntax},
		{"TO:a>b@c", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a@b c@d>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<\"a@b>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a\x01b@c>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a@b@c>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a@>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<@a:>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<@a b:c@d>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a@[1.2.3.4>", false, "", nil, "", ErrAddrSyntax},
		{"TO:<a@b> SIZE=", false, "", nil, "", ErrPathSyntax},
		{"TO:<a@b> =x", false, "", nil, "", ErrPathSyntax},
		{"TO:<a@b> A=b=c", false, "", nil, "", ErrPathSyntax},
		{"TO:<" + strings.Repeat("a", 251) + "@b.c>", false, "", nil, "", ErrAddrTooLong},
	}
	for _, tc := range cases {
		f, name := ParseRcpt, "ParseRcpt"
		if tc.mail {
			f, name = ParseMail, "ParseMail"
		}
		p, err := f(tc.arg)
		if err != tc.err || p.Addr != tc.addr || !reflect.DeepEqual(p.Params, tc.params) || (err == nil && p.Arg() != tc.out) {
			t.Errorf("%s(%q) = %q %q %q, %v; want %q %q %q, %v", name, tc.arg, p.Addr, p.Params, p.Arg(), err, tc.addr, tc.params, tc.out, tc.err)
		}
	}
	p, _ := ParseMail("FROM:<a@b> size=123 BODY=7BIT RET")
	if v, ok := p.Param("SIZE"); v != "123" || !ok {
		t.Errorf("Param(SIZE) = %q, %v", v, ok)
	}
	if v, ok := p.Param("ret"); v != "" || !ok {
		t.Errorf("Param(ret) = %q, %v", v, ok)
	}
	if _, ok := p.Param("ENVID"); ok {
		t.Error("Param(ENVID) present")
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
