package filter

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/sluice-mail/sluice/internal/replycode"
)

const (
	// maxReplyText is where proxsmtpd cuts the filter's stderr line (behaviour.md#filtering).
	maxReplyText = 255

	// rejectPrefix is what proxsmtpd puts before a stderr line without a code.
	rejectPrefix = "550 Content Rejected; "

	// defaultRejectText is proxsmtpd's text when the filter wrote no stderr.
	defaultRejectText = "Content Rejected"

	// localError is proxsmtpd's own reply when the filter gave no usable
	// answer. It carries no enhanced status code, as proxsmtpd's did not;
	// sluice appends a short reason in parentheses.
	localError = "451 Local Error"

	// tooLargeReply is sluice's answer when the filter's output exceeds
	// filter.max_output_size: RFC 3463's "message too big for system", a
	// 4xx so that nothing is lost while an operator raises the limit.
	tooLargeReply = "451 4.3.4 Filter output too large, please try again later"

	statusFiltered = "FILTERED"
	statusError    = "FILTER-ERROR"
)

// ParseStderr turns the stderr of a filter that exited with a non-zero
// status (and was not killed) into proxsmtpd's answer (behaviour.md#filtering). The last
// non-blank line, trimmed and cut at 255 bytes, is the reply as is when it
// starts with a 2xx, 4xx or 5xx code followed by a space or the end of the
// line: 2xx drops the message silently, 4xx and 5xx reject it. Any other
// text becomes "550 Content Rejected; <text>"; no text at all becomes
// "550 Content Rejected; Content Rejected". Control characters never reach
// the reply, which is always one line.
//
// status is what the per-message log line shows: the reply line when it came
// with a code, otherwise the text without proxsmtpd's prefix.
func ParseStderr(stderr []byte) (action Action, reply, status string) {
	text := lastLine(stderr)
	if text == "" {
		text = defaultRejectText
	}
	if hasCode(text) {
		if text[0] == '2' {
			return Drop, text, text
		}
		return Reject, text, text
	}
	return Reject, rejectPrefix + text, text
}

// hasCode reports whether s starts with a reply code sluice passes on:
// 2xx, 4xx or 5xx followed by a space or the end of the line. proxsmtpd
// accepted any three digits, which let a filter send a continuation line
// ("550-...") that left the client waiting, or a meaningless 3xx (behaviour.md#filtering).
func hasCode(s string) bool {
	_, ok := replycode.Final(s)
	return ok
}

// lastLine returns the last line of b that is not blank once cleaned.
func lastLine(b []byte) string {
	for len(b) > 0 {
		i := bytes.LastIndexByte(b, '\n')
		line := b[i+1:]
		if i < 0 {
			line = b
			b = nil
		} else {
			b = b[:i]
		}
		if t := cleanText(line); t != "" {
			return t
		}
	}
	return ""
}

// cleanText makes one stderr line fit for an SMTP reply: tabs become
// spaces, other control characters and anything not printable are dropped,
// invalid UTF-8 becomes '?', surrounding whitespace is trimmed and the text
// is cut at 255 bytes on a character boundary.
func cleanText(line []byte) string {
	var sb strings.Builder
	for len(line) > 0 {
		r, size := utf8.DecodeRune(line)
		line = line[size:]
		switch {
		case r == utf8.RuneError && size <= 1:
			sb.WriteByte('?')
		case r == '\t':
			sb.WriteByte(' ')
		case r == ' ' || (r > ' ' && r != 0x7f && unicode.IsPrint(r)):
			sb.WriteRune(r)
		}
	}
	s := strings.TrimSpace(sb.String())
	if len(s) > maxReplyText {
		cut := maxReplyText
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimRight(s[:cut], " ")
	}
	return s
}

// tempFail is the answer when the filter gave no usable verdict: a 4xx so
// the client retries, never a permanent 550 (behaviour.md#filtering).
func tempFail(reason, detail string) Result {
	return Result{
		Action:   TempFail,
		Reply:    localError + " (" + reason + ")",
		Status:   statusError,
		Detail:   detail,
		ExitCode: -1,
	}
}

// outputTooLarge is the answer when the filter wrote more than limit
// bytes: nothing of it is delivered.
func outputTooLarge(limit int64) Result {
	return Result{
		Action:   TempFail,
		Reply:    tooLargeReply,
		Status:   statusError,
		Detail:   fmt.Sprintf("filter output exceeds filter.max_output_size (%d bytes)", limit),
		ExitCode: -1,
	}
}

// judge turns how the shell ended and what it wrote on stderr into a
// Result (behaviour.md#filtering).
func judge(state *os.ProcessState, stderr []byte) Result {
	ws, ok := state.Sys().(syscall.WaitStatus)
	if !ok {
		return tempFail("filter failed", "unknown wait status "+state.String())
	}
	if ws.Signaled() {
		r := tempFail("filter failed", fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), ws.Signal()))
		r.Detail += withStderr(stderr)
		return r
	}
	code := ws.ExitStatus()
	switch {
	case code == 0:
		// Exit 0 delivers, whatever stderr says (behaviour.md#filtering).
		return Result{Action: Accept, Status: statusFiltered, Detail: "exit status 0", ExitCode: 0}
	case code == 126 || code == 127:
		why := "command not found"
		if code == 126 {
			why = "command not executable"
		}
		r := tempFail("filter failed", fmt.Sprintf("exit status %d (%s)", code, why))
		r.Detail += withStderr(stderr)
		r.ExitCode = code
		return r
	case code > 128 && code <= 128+64:
		// dash reports a child killed by signal N as 128+N (behaviour.md#filtering).
		sig := syscall.Signal(code - 128)
		r := tempFail("filter failed", fmt.Sprintf("exit status %d (killed by signal %d (%s))", code, int(sig), sig))
		r.Detail += withStderr(stderr)
		r.ExitCode = code
		return r
	}
	action, reply, status := ParseStderr(stderr)
	return Result{
		Action:   action,
		Reply:    reply,
		Status:   status,
		Detail:   fmt.Sprintf("exit status %d", code),
		ExitCode: code,
	}
}

// withStderr appends the filter's last stderr line to an operator detail,
// since that is usually what says why it failed ("sh: 1: x: not found").
func withStderr(stderr []byte) string {
	if t := lastLine(stderr); t != "" {
		return ": " + t
	}
	return ""
}
