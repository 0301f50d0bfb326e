package filter

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestParseStderr(t *testing.T) {
	tests := []struct {
		stderr string
		action Action
		reply  string
		status string
	}{
		{"", Reject, "550 Content Rejected; Content Rejected", "Content Rejected"},
		{"\n\n  \t\r\n", Reject, "550 Content Rejected; Content Rejected", "Content Rejected"},
		{"550 Bad Email\n", Reject, "550 Bad Email", "550 Bad Email"},
		{"  550 Bad Email  \r\n", Reject, "550 Bad Email", "550 Bad Email"},
		{"250 dropped", Drop, "250 dropped", "250 dropped"},
		{"250", Drop, "250", "250"},
		{"451 4.7.1 later\n", Reject, "451 4.7.1 later", "451 4.7.1 later"},
		{"550-more\n", Reject, "550 Content Rejected; 550-more", "550-more"},
		{"550x\n", Reject, "550 Content Rejected; 550x", "550x"},
		{"354 send\n", Reject, "550 Content Rejected; 354 send", "354 send"},
		{"199 odd\n", Reject, "550 Content Rejected; 199 odd", "199 odd"},
		{"55 short\n", Reject, "550 Content Rejected; 55 short", "55 short"},
		{"5a0 x\n", Reject, "550 Content Rejected; 5a0 x", "5a0 x"},
		{"virus\tfound\n", Reject, "550 Content Rejected; virus found", "virus found"},
		{"a\x00b\x7fc\n", Reject, "550 Content Rejected; abc", "abc"},
		{"line\rover\n", Reject, "550 Content Rejected; lineover", "lineover"},
		{"550 ok\n\x01\x02\n", Reject, "550 ok", "550 ok"},
		{"bad \xff utf8", Reject, "550 Content Rejected; bad ? utf8", "bad ? utf8"},
		{"Virus gefunden: Eicar-Test-Signatur ü\n", Reject, "550 Content Rejected; Virus gefunden: Eicar-Test-Signatur ü", "Virus gefunden: Eicar-Test-Signatur ü"},
		{"\u2028550 x\u0085", Reject, "550 x", "550 x"},
	}
	for _, tt := range tests {
		action, reply, status := ParseStderr([]byte(tt.stderr))
		if action != tt.action || reply != tt.reply || status != tt.status {
			t.Errorf("ParseStderr(%q) = %v %q %q, want %v %q %q", tt.stderr, action, reply, status, tt.action, tt.reply, tt.status)
		}
	}
}

func TestParseStderrCut(t *testing.T) {
	// Cut at 255 bytes, on a character boundary.
	line := "550 " + strings.Repeat("é", 200)
	_, reply, _ := ParseStderr([]byte(line))
	if len(reply) > 255 || !utf8.ValidString(reply) || !strings.HasPrefix(reply, "550 éé") {
		t.Errorf("reply %q (%d bytes)", reply, len(reply))
	}
	if len(reply) < 254 {
		t.Errorf("reply cut too short: %d bytes", len(reply))
	}
}

var replyRe = regexp.MustCompile(`^[245][0-9][0-9]( |$)`)

func FuzzParseStderr(f *testing.F) {
	for _, s := range []string{
		"", "550 Bad Email\n", "virus found\n", "451 4.7.1 Try again later\n", "250 dropped\n",
		"first line\n550 5.7.1 middle\n  last words here  \n\n \n", "554 5.7.1 Spam detected",
		"550-5.7.1 looks like continuation\n", "Killed\n", "sh: 1: /nonexistent/oracle-filter: not found\n",
		"354 x", "\x00\x01\r\n", "550 \xff\xfe", strings.Repeat("x", 404), "250", "2", "\u2028",
		"550 " + strings.Repeat("é", 200),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stderr []byte) {
		action, reply, status := ParseStderr(stderr)
		if !replyRe.MatchString(reply) {
			t.Fatalf("reply %q does not start with a 2xx/4xx/5xx code", reply)
		}
		if !utf8.ValidString(reply) || !utf8.ValidString(status) {
			t.Fatalf("invalid UTF-8: %q / %q", reply, status)
		}
		for _, r := range reply {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("reply %q holds %U", reply, r)
			}
		}
		if len(reply) > 255+len(rejectPrefix) || len(status) > 255 || status == "" {
			t.Fatalf("reply %q status %q: bad length", reply, status)
		}
		if strings.TrimSpace(reply) != reply || strings.TrimSpace(status) != status {
			t.Fatalf("untrimmed reply %q or status %q", reply, status)
		}
		switch reply[0] {
		case '2':
			if action != Drop {
				t.Fatalf("reply %q, action %v", reply, action)
			}
		default:
			if action != Reject {
				t.Fatalf("reply %q, action %v", reply, action)
			}
		}
		if reply != status && reply != rejectPrefix+status {
			t.Fatalf("status %q does not match reply %q", status, reply)
		}
	})
}
