package smtptest

import (
	"bufio"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// The Server against its own Client: a transaction, AUTH LOGIN, rules,
// the strict and the lax end of data, and what it records.
func TestServerRecords(t *testing.T) {
	s := NewServer(t, Config{LaxDot: true, Rules: []Rule{{Match: `^RCPT TO:<nobody@`, Reply: []string{"550 5.1.1 upstream: no"}}}})
	c := Dial(t, s.Addr())
	c.ExpectLine(Greeting)
	if rep := c.CmdExpect("EHLO me", 250); len(rep.Lines) != 1+len(DefaultExtensions) || rep.Lines[len(rep.Lines)-1] != "250 CHUNKING" {
		t.Fatalf("EHLO reply %q", rep.String())
	}
	c.CmdLine("AUTH LOGIN", "334 VXNlcm5hbWU6")
	c.CmdLine("dXNlcg==", "334 UGFzc3dvcmQ6")
	c.CmdLine("cGFzcw==", ReplyAuthOK)
	c.CmdLine("MAIL FROM:<a@example.com> SIZE=1", ReplySenderOK)
	c.CmdLine("RCPT TO:<nobody@example.com>", "550 5.1.1 upstream: no")
	c.CmdLine("RCPT TO:<b@example.com>", ReplyRcptOK)
	c.CmdLine("DATA", ReplyData)
	c.Write([]byte("one\r\n..two\n.\nMAIL FROM:<x@y>\r\n"))
	c.ExpectLine(Queued(1, 1))
	c.ExpectLine(ReplySenderOK) // the lax end of data let a command through
	c.CmdLine("QUIT", ReplyBye)
	c.ExpectEOF(5 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ss, err := s.WaitClosed(ctx)
	if err != nil || len(ss) != 1 {
		t.Fatalf("sessions %+v, %v", ss, err)
	}
	want := []string{"EHLO me\r\n", "AUTH LOGIN\r\n", "dXNlcg==\r\n", "cGFzcw==\r\n", "MAIL FROM:<a@example.com> SIZE=1\r\n",
		"RCPT TO:<nobody@example.com>\r\n", "RCPT TO:<b@example.com>\r\n", "DATA\r\n", "MAIL FROM:<x@y>\r\n", "QUIT\r\n"}
	if strings.Join(ss[0].Commands, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q", ss[0].Commands)
	}
	ms := s.Messages()
	if len(ms) != 1 || ms[0].Mail != "<a@example.com> SIZE=1" || len(ms[0].Rcpts) != 1 || ms[0].Rcpts[0] != "<b@example.com>" ||
		string(ms[0].Data) != "one\r\n..two\n" || ms[0].Reply != Queued(1, 1) {
		t.Errorf("messages %+v", ms)
	}
	s.Clear()
	if len(s.Sessions()) != 0 || s.Accepted() != 1 {
		t.Errorf("after Clear: %d sessions, %d accepted", len(s.Sessions()), s.Accepted())
	}
}

// A strict Server ends data only at <CRLF>.<CRLF> after a CRLF line;
// MultiLine doubles every built-in reply; an unterminated message is
// recorded as such.
func TestServerStrictMultiLine(t *testing.T) {
	s := NewServer(t, Config{MultiLine: true})
	c := Dial(t, s.Addr())
	c.Expect(220)
	c.CmdLine("MAIL FROM:<a@x>", "250-upstream: more | "+ReplySenderOK)
	c.CmdLine("RCPT TO:<b@x>", "250-upstream: more | "+ReplyRcptOK)
	c.CmdLine("DATA", "354-upstream: more | "+ReplyData)
	c.Write([]byte("a\n.\r\nb\r\n.\nc"))
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ss, err := s.WaitClosed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tr := ss[0].Transactions
	if len(tr) != 1 || tr[0].Terminated || string(tr[0].Data) != "a\n.\r\nb\r\n.\nc" || ss[0].End != "eof-in-data" {
		t.Errorf("session %+v", ss[0])
	}
}

// FuzzReadReply: the Client's reply reader never panics, and a reply it
// returns without error has lines with no LF, all but the last
// continuation lines.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250-a\r\n250 b\r\n", "250-a\n250 b\n", "2\r\n", "250", "250-x\r\n",
		"abc\r\n", "250-\r\n250\r\n", "\r\n", "550 5.1.1 <a@b>: no\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			b.Write(in)
			b.Close()
		}()
		c := &Client{tb: t, c: a, r: bufio.NewReader(a), Timeout: time.Second}
		rep, err := c.ReadReply()
		if err != nil {
			return
		}
		for i, l := range rep.Lines {
			if strings.Contains(l, "\n") {
				t.Fatalf("line %q holds a line break", l)
			}
			if i < len(rep.Lines)-1 && (len(l) < 4 || l[3] != '-') {
				t.Fatalf("line %d %q ends the reply early", i, l)
			}
		}
		if rep.Code != 0 && (rep.Code < 0 || rep.Code > 999) {
			t.Fatalf("code %d", rep.Code)
		}
	})
}
