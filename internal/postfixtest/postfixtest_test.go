package postfixtest

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// outsider is a loopback address outside the instance's mynetworks.
const outsider = "127.0.0.5"

var postfix Shared // started by the first test, stopped by TestMain

func TestMain(m *testing.M) {
	code := m.Run()
	postfix.Stop()
	os.Exit(code)
}

// dial connects from 'from' and says EHLO.
func dial(t *testing.T, s *Server, from, helo string) *smtptest.Client {
	t.Helper()
	c := smtptest.DialFrom(t, from, s.Addr())
	c.Expect(220)
	c.CmdExpect("EHLO "+helo, 250)
	return c
}

// send runs one transaction whose Subject is token and returns the final
// reply.
func send(c *smtptest.Client, from string, rcpts []string, token string) smtptest.Reply {
	c.CmdExpect("MAIL FROM:"+from, 250)
	for _, r := range rcpts {
		c.CmdExpect("RCPT TO:"+r, 250)
	}
	c.CmdExpect("DATA", 354)
	c.Write([]byte("Subject: " + token + "\r\n\r\nrecipient: forged@" + OutsideDomain + "\r\n.\r\n"))
	return c.Read()
}

// queued returns the one queued message holding token.
func queued(t *testing.T, s *Server, token string) Message {
	t.Helper()
	msgs, err := s.MessagesWith(token)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued with %q, expected 1: %v\n%s", len(msgs), token, msgs, s.LogTail())
	}
	return msgs[0]
}

// A message from an outsider to the local domain is queued, and postcat
// gives its envelope, the client and the content back; the null sender
// is "".
func TestPostfixQueue(t *testing.T) {
	t.Parallel()
	s := postfix.Get(t)
	c := dial(t, s, outsider, "client.example")
	rcpts := []string{"user@" + LocalDomain, `"a>b c"@` + LocalDomain, "<Other@LOCAL.test>"}
	if rep := send(c, "<sender@example.com> SIZE=100 BODY=8BITMIME", []string{"<" + rcpts[0] + ">", "<" + rcpts[1] + ">", rcpts[2]}, "queue-1"); rep.Code != 250 {
		t.Fatalf("end of data: %q", rep)
	}
	if rep := send(c, "<>", []string{"<user@" + LocalDomain + ">"}, "queue-2"); rep.Code != 250 {
		t.Fatalf("end of data: %q", rep)
	}
	c.CmdExpect("QUIT", 221)

	m := queued(t, s, "queue-1")
	want := []string{"user@local.test", "a>b c@local.test", "Other@LOCAL.test"} // Postfix's internal, unquoted form
	if m.Sender != "sender@example.com" || !slices.Equal(m.Recipients, want) {
		t.Errorf("envelope %q %q, expected %q %q", m.Sender, m.Recipients, "sender@example.com", want)
	}
	if m.ClientAddr != outsider || m.LogClientAddr != outsider || m.Helo != "client.example" || m.ClientName != "unknown" {
		t.Errorf("client %s", m)
	}
	if m.Queue != "incoming" || !strings.Contains(m.Content, "\nSubject: queue-1\n") ||
		!strings.HasPrefix(m.Content, "Received: from client.example (unknown ["+outsider+"])") {
		t.Errorf("queue %q, content %q", m.Queue, m.Content)
	}
	if n := queued(t, s, "queue-2"); n.Sender != "" || !slices.Equal(n.Recipients, want[:1]) {
		t.Errorf("null sender: %s", n)
	}
}

// XCLIENT from TrustedAddr changes who Postfix thinks the client is, and
// that client is then an outsider; an outsider may not use XCLIENT.
func TestPostfixXClient(t *testing.T) {
	t.Parallel()
	s := postfix.Get(t)
	c := dial(t, s, TrustedAddr, "proxy.example")
	c.CmdExpect("XCLIENT ADDR="+outsider+" NAME=client.example HELO=claimed.example", 220)
	c.CmdExpect("EHLO client.example", 250)
	c.CmdExpect("MAIL FROM:<sender@example.com>", 250)
	if rep := c.Cmd("RCPT TO:<user@" + OutsideDomain + ">"); rep.Code != 554 {
		t.Errorf("relay after XCLIENT: %q, expected 554", rep)
	}
	// Authorisation follows the new address: no second XCLIENT.
	c.CmdExpect("RSET", 250)
	if rep := c.Cmd("XCLIENT ADDR=" + TrustedAddr); rep.Code != 550 {
		t.Errorf("second XCLIENT: %q, expected 550", rep)
	}
	if rep := send(c, "<sender@example.com>", []string{"<user@" + LocalDomain + ">"}, "xclient-1"); rep.Code != 250 {
		t.Fatalf("end of data: %q", rep)
	}
	c.CmdExpect("QUIT", 221)
	m := queued(t, s, "xclient-1")
	if m.ClientAddr != outsider || m.ClientName != "client.example" || m.Helo != "client.example" {
		t.Errorf("client %s, expected client.example[%s] helo=client.example", m, outsider)
	}

	o := dial(t, s, outsider, "client.example")
	if rep := o.Cmd("XCLIENT ADDR=" + TrustedAddr); rep.Code != 550 {
		t.Errorf("XCLIENT from an outsider: %q, expected 550", rep)
	}
}

// Only mynetworks relays to other domains.
func TestPostfixRelay(t *testing.T) {
	t.Parallel()
	s := postfix.Get(t)
	for _, tc := range []struct {
		from string
		code int
	}{{TrustedAddr, 250}, {outsider, 554}} {
		c := dial(t, s, tc.from, "client.example")
		c.CmdExpect("MAIL FROM:<sender@example.com>", 250)
		if rep := c.Cmd("RCPT TO:<user@" + OutsideDomain + ">"); rep.Code != tc.code {
			t.Errorf("relay from %s: %q, expected %d", tc.from, rep, tc.code)
		}
		if tc.code == 250 {
			c.CmdExpect("DATA", 354)
			c.Write([]byte("Subject: relay-1\r\n\r\n.\r\n"))
			c.Expect(250)
		}
		c.CmdExpect("QUIT", 221)
	}
	m := queued(t, s, "relay-1")
	if m.ClientAddr != TrustedAddr || !slices.Equal(m.Recipients, []string{"user@" + OutsideDomain}) {
		t.Errorf("relayed %s", m)
	}
}

// Purge empties the queue. It runs alone: the others are parallel and
// start after it.
func TestPostfixPurge(t *testing.T) {
	s := postfix.Get(t)
	c := dial(t, s, outsider, "client.example")
	for i := range 2 {
		if rep := send(c, "<sender@example.com>", []string{"<user@" + LocalDomain + ">"}, fmt.Sprint("purge-", i)); rep.Code != 250 {
			t.Fatalf("end of data: %q", rep)
		}
	}
	c.CmdExpect("QUIT", 221)
	if msgs, err := s.Messages(); err != nil || len(msgs) < 2 {
		t.Fatalf("before purge: %v, %v", msgs, err)
	}
	if err := s.Purge(); err != nil {
		t.Fatal(err)
	}
	if msgs, err := s.Messages(); err != nil || len(msgs) != 0 {
		t.Fatalf("after purge: %v, %v", msgs, err)
	}
}
