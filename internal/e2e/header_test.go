package e2e

import (
	"net/mail"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/smtptest"
)

// behaviour.md#header: the Header option: expanded, placed in the filter's
// output (the filter never sees it), at the top for Received:, else before
// the first blank line, else after the last line.
func TestHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, header, body string
		want               string // delivered, with <DATE> for %d
	}{
		{"a04 before the first blank line", "X-Filtered: by test for %i on %l at %d", msg1,
			strings.Replace(msg1, "\r\n\r\n", "\r\nX-Filtered: by test for 127.0.0.1 on 127.0.0.1 at <DATE>\r\n\r\n", 1)},
		{"a05 Received: on top", "Received: from %i by sluice", msg1, "Received: from 127.0.0.1 by sluice\r\n" + msg1},
		{"a05 received: any case", "RECEIVED: x", msg1, "RECEIVED: x\r\n" + msg1},
		{"a06 no blank line: appended", "X-Filtered: yes", "Subject: no body\r\nX-Other: 1\r\n",
			"Subject: no body\r\nX-Other: 1\r\nX-Filtered: yes\r\n"},
		{"a18 empty message", "X-Filtered: yes", "", "X-Filtered: yes\r\n"},
		{"a17 message starts with a blank line", "X-Filtered: yes", "\r\nbody\r\n", "X-Filtered: yes\r\n\r\nbody\r\n"},
		{"a15 whitespace-only line is blank", "X-Filtered: yes", "Subject: x\r\n \t\r\nbody\r\n", "Subject: x\r\nX-Filtered: yes\r\n \t\r\nbody\r\n"},
		{"a07 escapes and %%", `X-One: 100%% sure\r\nX-Two:\tsecond  end`, msg2,
			strings.Replace(msg2, "\r\n\r\n", "\r\nX-One: 100% sure\r\nX-Two:\tsecond  end\r\n\r\n", 1)},
		{"unknown symbol dropped", "X-Odd: a%qb", msg2, strings.Replace(msg2, "\r\n\r\n", "\r\nX-Odd: ab\r\n\r\n", 1)},
		{"dot-started header stuffed", `.X-Dot: 1`, msg2, strings.Replace(msg2, "\r\n\r\n", "\r\n.X-Dot: 1\r\n\r\n", 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFilter(t, `cat "$d/input"`)
			h := start(t, smtptest.Config{}, "FilterCommand: "+f.Cmd, "Header: "+tc.header)
			c := h.hello(t)
			sendAlice(t, c, smtptest.Stuff(tc.body), smtptest.Queued(1, 1))
			c.CmdLine("QUIT", smtptest.ReplyBye)
			got := string(h.delivered(t, smtptest.Transaction{Mail: "<alice@example.com>", Rcpts: []string{"<bob@example.com>"}})[0].Data)
			want := tc.want
			if i := strings.Index(want, "<DATE>"); i >= 0 {
				// behaviour.md#header: %d is an RFC 5322 date.
				re := regexp.MustCompile(`at ([^\r]*)\r\n`)
				mm := re.FindStringSubmatch(got)
				if mm == nil {
					t.Fatalf("no date in %q", got)
				}
				if _, err := mail.ParseDate(mm[1]); err != nil {
					t.Errorf("%%d gave %q: %v", mm[1], err)
				}
				want = strings.Replace(want, "<DATE>", mm[1], 1)
			}
			if got != smtptest.Stuff(want) {
				t.Errorf("delivered\n got %q\nwant %q", got, smtptest.Stuff(want))
			}
			if r := f.one(t, mark{}); r.Input != tc.body {
				t.Errorf("the filter saw %q, expected the message without the header", r.Input)
			}
		})
	}
}
