package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// behaviour.md#filtering: pipe mode: the message on stdin, stdout delivered, and the
// filter environment exactly as proxsmtpd's.
func TestFilterPipe(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `cat "$d/input"; pwd > "$d/cwd"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	c := h.hello(t)
	sendAlice(t, c, msg1, smtptest.Queued(1, 1))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cMAIL, cRCPT, cDATA, cQUIT)
	h.delivered(t, txn(msg1))
	r := f.one(t, mark{})
	checkEnv(t, r, h.baseEnv()) // no EMAIL in pipe mode
	if r.Input != msg1 {
		t.Errorf("filter read %q", r.Input)
	}
}

// behaviour.md#filtering (b10): a filter that never reads its input still has its output
// delivered, and the edge still reads the whole message.
func TestFilterIgnoresInput(t *testing.T) {
	t.Parallel()
	f := newFilterNoInput(t, `printf 'Subject: fixed\r\n\r\nfixed\r\n'`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	c := h.hello(t)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 300)
	sendAlice(t, c, big, smtptest.Queued(1, 1))
	c.CmdLine("NOOP", smtptest.ReplyNoop)
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cMAIL, cRCPT, cDATA, cNOOP, cQUIT)
	h.delivered(t, txn("Subject: fixed\r\n\r\nfixed\r\n"))
}

// behaviour.md#filtering: exit 0 delivers whatever stderr says; otherwise the
// last non-blank stderr line is the reply if it starts with 2xx, 4xx or
// 5xx and a space, else "550 Content Rejected; <text>"; a filter that
// cannot run, exits 126/127 or dies from a signal gives 451. The upstream
// transaction is reset, and the session goes on.
func TestFilterResults(t *testing.T) {
	t.Parallel()
	f := newDynamicFilter(t)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	long := strings.Repeat("0", 400)
	tests := []struct {
		name   string
		tail   string
		final  string // "!4" = the edge's own 451
		status string // in the log line; "" not checked
	}{
		{"b01 code on stderr", `echo '550 Bad Email' >&2; exit 1`, "550 Bad Email", "550 Bad Email"},
		{"b02 text on stderr", `echo 'virus found' >&2; exit 1`, "550 Content Rejected; virus found", "virus found"},
		{"b03 no stderr", `exit 1`, "550 Content Rejected; Content Rejected", "Content Rejected"},
		{"b04 4xx", `echo '451 4.7.1 Try again later' >&2; exit 1`, "451 4.7.1 Try again later", "451 4.7.1 Try again later"},
		{"b05 250 drops silently", `echo '250 dropped' >&2; exit 1`, "250 dropped", "250 dropped"},
		{"b06 last non-blank line, trimmed", `printf 'first line\n550 5.7.1 middle\n  last words here  \n\n \n' >&2; exit 1`,
			"550 Content Rejected; last words here", "last words here"},
		{"b07 exit 0 ignores stderr", `cat "$d/input"; echo '550 nope' >&2; exit 0`, qd1, "FILTERED"},
		{"b08 no final newline, exit 2", `printf '554 5.7.1 Spam detected' >&2; exit 2`, "554 5.7.1 Spam detected", ""},
		{"b09 filter killed by SIGKILL", `sh -c 'kill -9 $$'`, "!451 ", "FILTER-ERROR"},
		{"filter killed by SIGTERM", `sh -c 'kill -TERM $$'`, "!451 ", "FILTER-ERROR"},
		{"the shell itself killed", `kill -9 $$`, "!451 ", "FILTER-ERROR"},
		{"b11 command not found", `/nonexistent/oracle-filter`, "!451 ", "FILTER-ERROR"},
		{"command not executable", `/etc/passwd`, "!451 ", "FILTER-ERROR"},
		{"b12 continuation marker is text", `echo '550-5.7.1 looks like continuation' >&2; exit 1`,
			"550 Content Rejected; 550-5.7.1 looks like continuation", ""},
		{"b13 cut at 255 bytes", `echo "550 ` + long + `" >&2; exit 1`, "550 " + long[:251], ""},
		{"3xx is text", `echo '354 go ahead' >&2; exit 1`, "550 Content Rejected; 354 go ahead", ""},
		{"6xx is text", `echo '650 odd' >&2; exit 1`, "550 Content Rejected; 650 odd", ""},
		{"code alone", `echo '554' >&2; exit 1`, "554", ""},
		{"control characters dropped", `printf '550 bad\033 red\001\n' >&2; exit 1`, "550 bad red", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.setTail(t, tc.tail)
			m := h.mark(t, f)
			c := h.hello(t)
			rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1)
			if !matchReply(rep, tc.final, m.sessions+1) {
				t.Fatalf("final reply %q, expected %q", rep.String(), tc.final)
			}
			c.CmdLine("NOOP", smtptest.ReplyNoop)
			c.CmdLine("QUIT", smtptest.ReplyBye)
			if tc.final == qd1 {
				h.commandsSince(t, m, cEHLO, cMAIL, cRCPT, cDATA, cNOOP, cQUIT)
				h.deliveredSince(t, m, txn(msg1))
			} else {
				h.commandsSince(t, m, cEHLO, cMAIL, cRCPT, cRSET, cNOOP, cQUIT)
				h.deliveredSince(t, m)
			}
			checkEnv(t, f.one(t, m), h.baseEnv())
			line := h.logs.waitMessageLines(t, m, 1)[0]
			if tc.status != "" && !hasAttr(line, "status", tc.status) {
				t.Errorf("log line %q, expected status=%s", line, tc.status)
			}
			if !hasAttr(line, "from", "alice@example.com") || !hasAttr(line, "to", "[bob@example.com]") {
				t.Errorf("log line %q lacks from= or to=", line)
			}
		})
	}
}

// k06: a rejected message, then a delivered one in the same session.
func TestFilterRejectThenAccept(t *testing.T) {
	t.Parallel()
	f := newFilter(t, `if grep -q Alice "$d/input"; then echo '550 5.7.1 first one rejected' >&2; exit 1; fi; cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd)
	h.runDialogs(t, f, []dialog{{name: "k06", steps: cat(mailSteps(msg1, "550 5.7.1 first one rejected"),
		[]step{
			s("MAIL FROM:<carol@example.com>", smtptest.ReplySenderOK),
			s("RCPT TO:<dave@example.com>", smtptest.ReplyRcptOK),
			s("DATA", own354), raw(msg2+".\r\n", qd1),
		}),
		up:        []string{cMAIL, cRCPT, cRSET, "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA},
		delivered: []smtptest.Transaction{msg("<carol@example.com>", []string{"<dave@example.com>"}, msg2)},
		check:     envIs(h, e("alice@example.com", "bob@example.com"), e("carol@example.com", "dave@example.com"))}})
}

// behaviour.md#filtering file mode (c01-c03): the message in a 0600 file in TempDirectory
// named by EMAIL; what the file holds afterwards is delivered; the file
// is removed.
func TestFilterFileMode(t *testing.T) {
	t.Parallel()
	f := newDynamicFilter(t)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "FilterType: file")
	tests := []struct {
		name, tail, final, data string
	}{
		{"c01 unchanged", `true`, qd1, msg1},
		{"c02 edited in place", `{ printf 'X-Scanned: yes\r\n'; cat "$d/input"; } > "$EMAIL"`, qd1, "X-Scanned: yes\r\n" + msg1},
		{"file replaced", `printf 'Subject: new\r\n\r\nnew\r\n' > "$EMAIL.new" && mv "$EMAIL.new" "$EMAIL"`, qd1, "Subject: new\r\n\r\nnew\r\n"},
		{"file truncated", `: > "$EMAIL"`, qd1, ""},
		{"c03 reject", `echo '550 5.7.1 file says no' >&2; exit 1`, "550 5.7.1 file says no", ""},
		{"file removed", `rm "$EMAIL"`, "!451 ", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.setTail(t, tc.tail)
			m := h.mark(t, f)
			c := h.hello(t)
			rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1)
			if !matchReply(rep, tc.final, m.sessions+1) {
				t.Fatalf("final reply %q, expected %q", rep.String(), tc.final)
			}
			c.CmdLine("QUIT", smtptest.ReplyBye)
			if tc.final == qd1 {
				h.deliveredSince(t, m, txn(tc.data))
			} else {
				h.commandsSince(t, m, cEHLO, cMAIL, cRCPT, cRSET, cQUIT)
			}
			r := f.one(t, m)
			env := h.baseEnv()
			env["EMAIL"] = "*"
			checkEnv(t, r, env)
			if filepath.Dir(r.Env["EMAIL"]) != h.tempDir {
				t.Errorf("EMAIL=%q is not in TempDirectory %s", r.Env["EMAIL"], h.tempDir)
			}
			if r.Mode != "600" {
				t.Errorf("EMAIL file mode %s, expected 600", r.Mode)
			}
			if r.Input != msg1 {
				t.Errorf("EMAIL file held %q", r.Input)
			}
			if left, _ := os.ReadDir(h.tempDir); len(left) > 0 {
				t.Errorf("TempDirectory not cleaned up: %v", left)
			}
		})
	}
}

// behaviour.md#filtering: FilterTimeout is a total deadline; on expiry the whole
// process group goes and the reply is 451.
func TestFilterTimeout(t *testing.T) {
	t.Parallel()
	t.Run("e01 e03 pipe mode, process group killed", func(t *testing.T) {
		t.Parallel()
		// A child of the filter that would finish after the timeout.
		f := newDynamicFilter(t)
		h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "FilterTimeout: 1")
		f.setTail(t, `(sleep 2; : > "$d/completed") </dev/null >/dev/null 2>&1 &
sleep 3; cat "$d/input"`)
		m := h.mark(t, f)
		c := h.hello(t)
		own(t, sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1), 451)
		c.CmdLine("NOOP", smtptest.ReplyNoop)
		r := f.one(t, m)
		if waitFile(filepath.Join(r.Dir, "completed"), 3*time.Second) {
			t.Errorf("a process of the timed-out filter ran to its end")
		}
		// e02: a filter trickling stderr is no exception.
		f.setTail(t, `i=0; while [ $i -lt 10 ]; do printf ' ' >&2; sleep 0.3; i=$((i+1)); done; cat "$d/input"`)
		own(t, sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1), 451)
		c.CmdLine("QUIT", smtptest.ReplyBye)
		h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cNOOP, cMAIL, cRCPT, cRSET, cQUIT)
		h.delivered(t)
		for _, l := range h.logs.waitMessageLines(t, m, 2) {
			if !hasAttr(l, "status", "FILTER-ERROR") {
				t.Errorf("log line %q, expected status=FILTER-ERROR", l)
			}
		}
	})
	t.Run("c04 file mode", func(t *testing.T) {
		t.Parallel()
		f := newFilter(t, "sleep 3")
		h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "FilterType: file", "FilterTimeout: 1")
		c := h.hello(t)
		own(t, sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1), 451)
		c.CmdLine("QUIT", smtptest.ReplyBye)
		h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cQUIT)
		h.delivered(t)
	})
}

// behaviour.md#reject-and-passthrough (f01-f03): FilterType reject answers MAIL, RCPT and DATA itself,
// never relays them, and resets the upstream after DATA.
func TestFilterTypeReject(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, setting, reply string }{
		{"f01 default", "", "530 Email Rejected"},
		{"f02 custom", "554 5.7.1 No mail here", "554 5.7.1 No mail here"},
		{"f03 text without code", "go away", "550 Content Rejected; go away"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conf := []string{"FilterType: reject", "FilterCommand: cat"}
			if tc.setting != "" {
				conf = append(conf, "FilterReject: "+tc.setting)
			}
			h := start(t, smtptest.Config{}, conf...)
			c := h.hello(t)
			c.CmdLine("MAIL FROM:<alice@example.com>", tc.reply)
			c.CmdLine("RCPT TO:<bob@example.com>", tc.reply)
			c.CmdLine("DATA", tc.reply) // no 354
			c.CmdLine("NOOP", smtptest.ReplyNoop)
			c.CmdLine("QUIT", smtptest.ReplyBye)
			h.commands(t, cEHLO, cRSET, cNOOP, cQUIT)
			h.delivered(t)
			line := h.logs.waitMessageLines(t, mark{}, 1)[0]
			if !hasAttr(line, "status", "REJECTED") || strings.Contains(line, "from=") {
				t.Errorf("log line %q, expected status=REJECTED and no from=", line)
			}
		})
	}
}

// behaviour.md#reject-and-passthrough (a14): no FilterCommand: the message passes unchanged, with the
// Header; the log line has no status.
func TestNoFilterCommand(t *testing.T) {
	t.Parallel()
	h := start(t, smtptest.Config{}, "Header: X-Filtered: none")
	c := h.hello(t)
	sendAlice(t, c, msg1, smtptest.Queued(1, 1))
	sendAlice(t, c, "..dot\r\n", smtptest.Queued(1, 2))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.delivered(t, txn(strings.Replace(msg1, "\r\n\r\n", "\r\nX-Filtered: none\r\n\r\n", 1)), txn("..dot\r\nX-Filtered: none\r\n"))
	for _, l := range h.logs.waitMessageLines(t, mark{}, 2) {
		if strings.Contains(l, "status=") {
			t.Errorf("log line %q has a status", l)
		}
	}
}

// The failure rule: a verdict that does not come within job_timeout is a
// 4xx after the whole message was read, and the session goes on.
func TestJobTimeout(t *testing.T) {
	t.Parallel()
	// The filter ignores SIGTERM, so it outlives FilterTimeout by the kill
	// grace; the edge stops waiting at job_timeout.
	f := newFilter(t, `if grep -q Alice "$d/input"; then trap '' TERM; sleep 6; fi; cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "FilterTimeout: 2", "job_timeout: 3s")
	c := h.hello(t)
	own(t, sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, msg1), 451)
	c.CmdLine("NOOP", smtptest.ReplyNoop)
	if rep := sendMail(c, "<carol@example.com>", []string{"<dave@example.com>"}, msg2); rep.String() != smtptest.Queued(1, 1) {
		t.Fatalf("second message: %q", rep.String())
	}
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cNOOP, "MAIL FROM:<carol@example.com>\r\n", "RCPT TO:<dave@example.com>\r\n", cDATA, cQUIT)
	h.delivered(t, msg("<carol@example.com>", []string{"<dave@example.com>"}, msg2))
}

// The failure rule: the message store fails: one 4xx after the whole
// message was read, the session stays usable, and mail flows again once
// the store is back.
func TestStoreFailure(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "store")
	f := newFilter(t, `cat "$d/input"`)
	h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "store.dir: "+store)
	c := h.hello(t)
	// The store's directory becomes a file: nothing can be written.
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A body holding commands: if it were not read to its end they would
	// reach the upstream.
	body := "Subject: x\r\n\r\nRCPT TO:<evil@example.com>\r\n" + strings.Repeat("line\r\n", 5000)
	rep := sendMail(c, "<alice@example.com>", []string{"<bob@example.com>"}, body)
	own(t, rep, 451)
	c.CmdLine("NOOP", smtptest.ReplyNoop)
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	sendAlice(t, c, msg1, smtptest.Queued(1, 1))
	c.CmdLine("QUIT", smtptest.ReplyBye)
	h.commands(t, cEHLO, cMAIL, cRCPT, cRSET, cNOOP, cMAIL, cRCPT, cDATA, cQUIT)
	h.delivered(t, txn(msg1))
	checkEnv(t, f.one(t, mark{}), h.baseEnv())
}
