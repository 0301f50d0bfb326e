package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/postfixtest"
	"github.com/sluice-mail/sluice/internal/smtptest"
)

// outsideClient is where the dialogs come from: a loopback address outside
// Postfix's mynetworks, so that only the edge's XCLIENT tells Postfix who
// the client is, and anything else Postfix believes shows.
const outsideClient = "127.0.0.5"

// A differential case is one hostile dialog. Each line is sent with CRLF;
// a line holding bare LFs is several commands in one write and gets one
// reply each. A line that starts with "Subject: " or is "." is message
// content: it is sent only when the last reply was 354, and gets one reply.
type differentialCase struct {
	name  string
	lines []string
	// queues: a correct edge lets Postfix queue a message here, so an
	// empty queue is a failure too (the baselines, which keep the test
	// from passing by refusing everything).
	queues bool
}

// content is a message whose Subject names the case.
func content(subject string) string {
	return "Subject: " + subject + "\r\n\r\nbody of " + subject + "\r\n."
}

// Issue 6 item 1: whatever a client sends, the envelope the filter sees
// is the envelope Postfix queues, and Postfix's client is the real one.
// The same dialogs run through the real edge (XClient: on) into a real
// Postfix, which trusts only the edge's address; for every message in
// Postfix's queue there must be a filter run with the same sender,
// recipients (in order) and content, and Postfix must have recorded the
// real client (127.0.0.5), never the edge's own address or a forged one.
// A case in which the edge refuses the lines and nothing is queued passes.
//
// The cases run one after another, each with Postfix's queue to itself:
// hidden DATA and BDAT queue messages with no content to tell them by.
func TestPostfixDifferential(t *testing.T) {
	pf := postfix.Get(t)
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "XClient: on", "OutAddress: "+pf.Addr(), "TimeOut: 5")
	const (
		ehlo     = "EHLO client.example"
		spammer  = "MAIL FROM:<spammer@evil.test>"
		victim   = "RCPT TO:<victim@" + postfixtest.OutsideDomain + ">"
		user     = "RCPT TO:<user@" + postfixtest.LocalDomain + ">"
		trusted  = "MAIL FROM:<trusted@corp.test>"
		xcForged = "ADDR=" + postfixtest.TrustedAddr + " NAME=trusted.corp.test"
	)
	cases := []differentialCase{
		{name: "baseline", queues: true, lines: []string{ehlo, trusted, user, "DATA", content("baseline")}},
		{name: "baseline relay refused", queues: true,
			lines: []string{ehlo, spammer, victim, user, "DATA", content("baseline relay")}},

		// XCLIENT hidden from the edge, then a relay attempt.
		{name: "XCLIENT<TAB>", lines: []string{ehlo, "XCLIENT\t" + xcForged, spammer, victim, "DATA", content("xclient tab")}},
		{name: "<SP>XCLIENT", lines: []string{ehlo, " XCLIENT " + xcForged, spammer, victim, "DATA", content("xclient space")}},
		{name: "XCLIENT<VT>", lines: []string{ehlo, "XCLIENT\v" + xcForged, spammer, victim, "DATA", content("xclient vt")}},
		{name: "xclient<TAB> before EHLO",
			lines: []string{"xclient\t" + xcForged, ehlo, spammer, victim, "DATA", content("xclient first")}},

		// A greeting the edge does not see as EHLO: it never sends its own
		// XCLIENT, and Postfix takes the client for the edge.
		{name: "EHLO<TAB>", lines: []string{"EHLO\tclient.example", spammer, victim, "DATA", content("ehlo tab")}},
		{name: "EHLO<TAB>, then XCLIENT<TAB> forges the client", lines: []string{"EHLO\tclient.example",
			"XCLIENT\tADDR=10.9.9.9 NAME=trusted.corp.test", "EHLO\tclient.example", spammer, user, "DATA", content("ehlo xclient")}},
		{name: "<SP>EHLO", lines: []string{" EHLO client.example", spammer, victim, "DATA", content("ehlo space")}},
		{name: "HELO, not EHLO", lines: []string{"HELO client.example", spammer, victim, "DATA", content("helo")}},
		{name: "no greeting", lines: []string{spammer, victim, "DATA", content("no greeting")}},

		// The envelope hidden from the edge (the dialog first).
		{name: "<SP>RSET, MAIL<TAB>FROM, RCPT<TAB>TO", lines: []string{ehlo, trusted, user,
			" RSET", "MAIL\tFROM:<spammer@evil.test>", "RCPT\tTO:<hidden@local.test>", "rcpt to:<user@local.test>",
			"DATA", content("issue dialog")}},
		{name: "<TAB>RSET, <TAB>MAIL, <TAB>RCPT<TAB>", lines: []string{ehlo, trusted, user,
			"\tRSET", "\tMAIL FROM:<spammer@evil.test>\t", "\tRCPT TO:<hidden@local.test>\t", "DATA", content("leading tabs")}},
		{name: "RSET<VT>, MAIL<VT>FROM, RCPT<FF>TO", lines: []string{ehlo, trusted, user,
			"RSET\v", "MAIL\vFROM:<spammer@evil.test>", "RCPT\fTO:<hidden@local.test>", "DATA", content("vt ff")}},
		{name: "MAIL<TAB>FROM only", lines: []string{ehlo, "MAIL\tFROM:<spammer@evil.test>", user, "DATA", content("mail tab")}},
		{name: "RCPT<TAB>TO only", lines: []string{ehlo, trusted, user, "RCPT\tTO:<hidden@local.test>", "DATA", content("rcpt tab")}},
		{name: "trailing tabs", lines: []string{ehlo, trusted + "\t", user + "\t", "DATA\t", content("trailing tabs")}},
		{name: "lower case verbs", lines: []string{ehlo, "mail from:<trusted@corp.test>", "rcpt to:<user@local.test>",
			"data", content("lower case")}},

		// Paths as Postfix parses them.
		{name: "space after the colon", lines: []string{ehlo, "MAIL FROM: <trusted@corp.test>", "RCPT TO: <user@local.test>",
			"DATA", content("space colon")}},
		{name: "quoted local part holding >", lines: []string{ehlo, trusted, `RCPT TO:<"a>b"@local.test>`,
			`RCPT TO:<"@outside.test>"@local.test>`, "DATA", content("quoted gt")}},
		{name: "quoted local part holding < > and space", lines: []string{ehlo, `MAIL FROM:<"x y"@corp.test>`,
			`RCPT TO:<"<u>"@local.test>`, `RCPT TO:<"a b"@local.test>`, "DATA", content("quoted misc")}},
		{name: "parameters", lines: []string{ehlo, trusted + " SIZE=100 BODY=8BITMIME",
			user + " NOTIFY=NEVER ORCPT=rfc822;user@local.test", "DATA", content("parameters")}},
		{name: "null sender", lines: []string{ehlo, "MAIL FROM:<>", user, "DATA", content("null sender")}},
		{name: "unbracketed paths", lines: []string{ehlo, "MAIL FROM:trusted@corp.test", "RCPT TO:user@local.test",
			"DATA", content("unbracketed")}},
		{name: "comment in a path", lines: []string{ehlo, trusted, "RCPT TO:<user(comment)@local.test>", "DATA", content("comment")}},
		{name: "spaces inside the brackets", lines: []string{ehlo, trusted, "RCPT TO:< user@local.test >", "DATA", content("spaces")}},
		{name: "source route", lines: []string{ehlo, trusted, "RCPT TO:<@relay.test:user@local.test>", "DATA", content("route")}},
		{name: "bare LF between commands", lines: []string{ehlo, trusted + "\n" + user, "DATA", content("bare lf")}},

		// XFORWARD, which only the edge's own address may use.
		{name: "XFORWARD<TAB>", lines: []string{ehlo, "XFORWARD\tADDR=10.9.9.9 HELO=forged.test", trusted, user,
			"DATA", content("xforward tab")}},
		{name: "HELO, XFORWARD<TAB>", lines: []string{"HELO client.example", "XFORWARD\tADDR=10.9.9.9 HELO=forged.test",
			trusted, user, "DATA", content("helo xforward")}},

		// A message the edge never sees as one: no content to filter.
		{name: "<SP>DATA", lines: []string{ehlo, trusted, user, " DATA", "."}},
		{name: "DATA<VT>", lines: []string{ehlo, trusted, user, "DATA\v", "."}},
		{name: "<SP>BDAT 0 LAST", lines: []string{ehlo, trusted, user, " BDAT 0 LAST"}},
		{name: "BDAT<TAB>0 LAST", lines: []string{ehlo, trusted, user, "BDAT\t0 LAST"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := pf.Purge(); err != nil {
				t.Fatal(err)
			}
			m := h.mark(t, f)
			dialog := runDifferential(t, h, tc.lines)
			msgs, err := pf.Messages()
			if err != nil {
				t.Fatal(err)
			}
			runs := f.runsSince(t, m)
			problems := compareWithPostfix(msgs, runs)
			if tc.queues && len(msgs) == 0 {
				problems = append(problems, "Postfix queued nothing, and a correct edge lets this message through")
			}
			if len(problems) == 0 {
				t.Logf("%s\n%s\n%s", describeQueue(msgs), describeRuns(runs), dialog)
			} else {
				t.Errorf("%s\n%s\n%s\n%s", strings.Join(problems, "\n"), describeQueue(msgs), describeRuns(runs), dialog)
			}
		})
	}
}

// runDifferential runs one dialog from outsideClient, ends it with QUIT,
// and returns its transcript. An edge that stops answering or closes ends
// the dialog early; that is not a failure in itself.
func runDifferential(t *testing.T, h *harness, lines []string) string {
	t.Helper()
	var b strings.Builder
	c := smtptest.DialFrom(t, outsideClient, h.addr)
	defer c.Close()
	c.Timeout = 8 * time.Second // longer than the edge's TimeOut
	read := func() (smtptest.Reply, bool) {
		rep, err := c.ReadReply()
		if err != nil {
			fmt.Fprintf(&b, "  < (%v) %q\n", err, rep.String())
			return rep, false
		}
		fmt.Fprintf(&b, "  < %q\n", rep.String())
		return rep, true
	}
	last, ok := read() // greeting
	for _, l := range append(slices.Clone(lines), "QUIT") {
		if !ok {
			break
		}
		isContent := strings.HasPrefix(l, "Subject: ") || l == "."
		if isContent && last.Code != 354 {
			fmt.Fprintf(&b, "  (not sent: %q)\n", l)
			continue
		}
		fmt.Fprintf(&b, "  > %q\n", l)
		if err := c.TryWrite([]byte(l + "\r\n")); err != nil {
			fmt.Fprintf(&b, "  (write: %v)\n", err)
			break
		}
		n := 1
		if !isContent {
			n += strings.Count(l, "\n")
		}
		for range n {
			if last, ok = read(); !ok {
				break
			}
		}
	}
	return "the dialog, from " + outsideClient + ":\n" + b.String()
}

// compareWithPostfix checks every queued message against the filter runs
// and returns what is wrong, one line each.
func compareWithPostfix(msgs []postfixtest.Message, runs []filterRun) []string {
	var problems []string
	used := make([]bool, len(runs))
	for _, m := range msgs {
		if m.ClientAddr != outsideClient {
			problems = append(problems, fmt.Sprintf("%s: Postfix took the client for %s, not the real %s",
				m.QueueID, m.ClientAddr, outsideClient))
		}
		i := matchingRun(m, runs, used)
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s: queued from=<%s> to=%q, and no filter run saw that envelope and content",
				m.QueueID, m.Sender, m.Recipients))
			continue
		}
		used[i] = true
		// An XFORWARD that Postfix took must be what the filter saw as REMOTE.
		if m.LogClientAddr != m.ClientAddr && runs[i].Env["REMOTE"] != m.LogClientAddr {
			problems = append(problems, fmt.Sprintf("%s: Postfix logs the client as %s (XFORWARD), the filter saw REMOTE=%q",
				m.QueueID, m.LogClientAddr, runs[i].Env["REMOTE"]))
		}
	}
	return problems
}

// matchingRun is the first unused run with m's envelope and content, or
// -1.
func matchingRun(m postfixtest.Message, runs []filterRun, used []bool) int {
	for i, r := range runs {
		if used[i] {
			continue
		}
		sender, rcpts := filterEnvelope(r)
		if sender == m.Sender && slices.Equal(rcpts, m.Recipients) && sameContent(r.Input, m.Content) {
			return i
		}
	}
	return -1
}

// sameContent reports whether Postfix queued the message the filter read:
// the same body, and every header the filter read (Postfix adds its
// Received line and any missing Message-Id, Date, From).
func sameContent(input, queued string) bool {
	inHead, inBody := splitMessage(strings.ReplaceAll(input, "\r\n", "\n"))
	qHead, qBody := splitMessage(queued)
	if inBody != qBody {
		return false
	}
	for _, l := range inHead {
		if !slices.Contains(qHead, l) {
			return false
		}
	}
	return true
}

// splitMessage splits LF-terminated lines at the first empty line into
// header lines (continuations kept as their own lines) and the body.
func splitMessage(msg string) (head []string, body string) {
	h, b, _ := strings.Cut(msg, "\n\n")
	if strings.HasPrefix(msg, "\n") {
		h, b = "", msg[1:]
	}
	if h != "" {
		head = strings.Split(strings.TrimSuffix(h, "\n"), "\n")
	}
	return head, b
}

// filterEnvelope is a run's SENDER and RECIPIENTS in Postfix's internal
// form, so that equal mailboxes compare equal: the null sender is "", and
// a quoted local part loses its quoting ("a b"@x is a b@x).
func filterEnvelope(r filterRun) (string, []string) {
	sender := internalForm(r.Env["SENDER"])
	if sender == "<>" {
		sender = ""
	}
	var rcpts []string
	if v, ok := r.Env["RECIPIENTS"]; ok && v != "" {
		for _, a := range strings.Split(v, "\n") {
			rcpts = append(rcpts, internalForm(a))
		}
	}
	return sender, rcpts
}

// internalForm unquotes a leading quoted-string local part, as Postfix
// stores addresses.
func internalForm(addr string) string {
	if !strings.HasPrefix(addr, `"`) {
		return addr
	}
	var b strings.Builder
	for i := 1; i < len(addr); i++ {
		switch c := addr[i]; {
		case c == '\\' && i+1 < len(addr):
			i++
			b.WriteByte(addr[i])
		case c == '"':
			return b.String() + addr[i+1:]
		default:
			b.WriteByte(c)
		}
	}
	return addr // unterminated: leave it as it is
}

func describeQueue(msgs []postfixtest.Message) string {
	if len(msgs) == 0 {
		return "Postfix queued nothing."
	}
	var b strings.Builder
	b.WriteString("Postfix queued:\n")
	for _, m := range msgs {
		fmt.Fprintf(&b, "  %s from=<%s> to=%q client=%s[%s] log_client=%s helo=%q\n", m.QueueID, m.Sender, m.Recipients,
			m.ClientName, m.ClientAddr, m.LogClientAddr, m.Helo)
		fmt.Fprintf(&b, "    content %q\n", clip(m.Content))
	}
	return b.String()
}

func describeRuns(runs []filterRun) string {
	if len(runs) == 0 {
		return "The filter never ran."
	}
	var b strings.Builder
	b.WriteString("The filter saw:\n")
	for _, r := range runs {
		rcpts := strings.Split(r.Env["RECIPIENTS"], "\n")
		fmt.Fprintf(&b, "  SENDER=%q RECIPIENTS=%q CLIENT=%q", r.Env["SENDER"], rcpts, r.Env["CLIENT"])
		if v, ok := r.Env["REMOTE"]; ok {
			fmt.Fprintf(&b, " REMOTE=%q", v)
		}
		fmt.Fprintf(&b, "\n    input %q\n", clip(r.Input))
	}
	return b.String()
}
