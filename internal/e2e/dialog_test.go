package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// A dialog is one small SMTP conversation, chasquid style: what the client
// sends, what it must get back, and what the upstream must have received.
type dialog struct {
	name  string
	steps []step
	// up is what the upstream must receive, in order, between the
	// client's EHLO (sent first unless noEHLO) and QUIT (sent last
	// unless noQuit).
	up     []string
	noEHLO bool
	noQuit bool // the steps end the session themselves
	// delivered, if not nil, are the messages the upstream must get;
	// nil Data is not checked. An empty non-nil slice means none.
	delivered []smtptest.Transaction
	// check, if set, sees the filter runs of this dialog.
	check func(t *testing.T, runs []filterRun)
}

// A step sends one command line (CRLF appended) or raw bytes, then reads
// one reply per entry of want. A want entry is either the exact reply
// (lines joined with " | "; "{S}" stands for the upstream session number,
// for queued-as texts) or, with a leading '!', the edge's own reply: the
// rest must be a prefix of it and it must not say "upstream".
type step struct {
	send string
	raw  string
	want []string
}

// s is a step sending line and expecting want.
func s(line string, want ...string) step { return step{send: line, want: want} }

// raw is a step sending bytes as they are.
func raw(b string, want ...string) step { return step{raw: b, want: want} }

// Replies used in dialogs.
const (
	qd1      = "250 2.0.0 upstream: queued as S{S}M1"
	qd2      = "250 2.0.0 upstream: queued as S{S}M2"
	own354   = "!354 Start mail input"
	ehloRepl = "250-" + edgeHost + " | 250-SIZE 10240000 | 250-VRFY | 250-ETRN | 250-ENHANCEDSTATUSCODES | 250-8BITMIME | 250-DSN | 250 SMTPUTF8"
)

// mailSteps is MAIL alice, RCPT bob, DATA, body.
func mailSteps(body, final string) []step {
	return []step{
		s("MAIL FROM:<alice@example.com>", smtptest.ReplySenderOK),
		s("RCPT TO:<bob@example.com>", smtptest.ReplyRcptOK),
		s("DATA", own354),
		raw(body+".\r\n", final),
	}
}

// cat joins step lists.
func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// matchReply reports whether rep is what want describes (see step).
func matchReply(rep smtptest.Reply, want string, sess int) bool {
	got := rep.String()
	if strings.HasPrefix(want, "!") {
		return strings.HasPrefix(got, want[1:]) && !strings.Contains(got, "upstream")
	}
	return got == strings.ReplaceAll(want, "{S}", strconv.Itoa(sess))
}

// runDialogs runs each dialog as a subtest, one after the other, on h;
// f (may be nil) is the harness's dump filter.
func (h *harness) runDialogs(t *testing.T, f *filterScript, ds []dialog) {
	t.Helper()
	for _, d := range ds {
		t.Run(d.name, func(t *testing.T) { h.runDialog(t, f, d) })
	}
}

func (h *harness) runDialog(t *testing.T, f *filterScript, d dialog) {
	t.Helper()
	m := h.mark(t, f)
	sess := m.sessions + 1
	c := h.dial(t)
	up := []string{}
	if !d.noEHLO {
		c.CmdLine("EHLO client.example", ehloReplyFor(h))
		up = append(up, cEHLO)
	}
	runSteps(t, c, d.steps, sess)
	if !d.noQuit {
		c.CmdLine("QUIT", smtptest.ReplyBye)
		up = append(up, d.up...)
		up = append(up, cQUIT)
	} else {
		up = append(up, d.up...)
	}
	h.commandsSince(t, m, up...)
	if d.delivered != nil {
		h.deliveredSince(t, m, d.delivered...)
	}
	if d.check != nil && f != nil {
		d.check(t, f.runsSince(t, m))
	}
}

// runSteps sends each step and checks its replies.
func runSteps(t *testing.T, c *smtptest.Client, steps []step, sess int) {
	t.Helper()
	for i, st := range steps {
		if st.raw != "" {
			c.Write([]byte(st.raw))
		} else {
			c.Send(st.send)
		}
		for j, w := range st.want {
			rep, err := c.ReadReply()
			if err != nil {
				t.Fatalf("step %d (%q), reply %d: %v (got %q, expected %q)", i, label(st), j, err, rep.String(), w)
			}
			if !matchReply(rep, w, sess) {
				t.Fatalf("step %d (%q), reply %d: got %q, expected %q", i, label(st), j, rep.String(), w)
			}
		}
	}
}

// ehloReplyFor is the client's view of the upstream's EHLO reply: the
// edge's host line, then the upstream's extensions minus those the edge
// must not advertise (behaviour.md#ehlo), the last line marked with a space.
func ehloReplyFor(h *harness) string {
	exts := h.upCfg.Extensions
	if exts == nil {
		exts = smtptest.DefaultExtensions
	}
	texts := []string{edgeHost}
	for _, e := range exts {
		kw, param, _ := strings.Cut(e, " ")
		switch strings.ToUpper(kw) {
		case "PIPELINING", "STARTTLS", "CHUNKING", "BINARYMIME", "CHECKPOINT", "XCLIENT", "XEXCH50":
			continue
		case "SIZE":
			// Issue 6: never more than max_message_size.
			if n, _ := strconv.ParseInt(param, 10, 64); h.cfg.MaxMessageSize > 0 && (n == 0 || n > h.cfg.MaxMessageSize) {
				e = kw + " " + strconv.FormatInt(h.cfg.MaxMessageSize, 10)
			}
		}
		texts = append(texts, e)
	}
	lines := make([]string, len(texts))
	for i, x := range texts {
		sep := "-"
		if i == len(texts)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + x
	}
	return strings.Join(lines, " | ")
}

func label(st step) string {
	if st.raw != "" {
		return clip(st.raw)
	}
	return clip(st.send)
}
