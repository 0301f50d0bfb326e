// Package replycode reads the three-digit code at the start of an SMTP
// reply line (RFC 5321 4.2): the one place sluice decides whether a text
// is a reply, be it the upstream's, a filter's or the operator's
// FilterReject. It imports nothing of sluice, so the worker and the edge
// share it without linking each other's side.
package replycode

// Parse returns the code of one reply line and whether it is the last
// line of its reply: "250 ok" and "250" are last lines, "250-ok" is not.
// ok is false unless the line starts with three digits followed by a
// space, a hyphen or the end of the line.
func Parse(line string) (code int, last, ok bool) {
	if len(line) < 3 || !digit(line[0]) || !digit(line[1]) || !digit(line[2]) {
		return 0, false, false
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if len(line) == 3 {
		return code, true, true
	}
	switch line[3] {
	case ' ':
		return code, true, true
	case '-':
		return code, false, true
	}
	return 0, false, false
}

// Final returns the class (2, 4 or 5) of a text that is a complete
// one-line reply a client may be given in answer to a message: a code of
// one of those classes followed by a space or the end of the line. ok is
// false for anything else: no code, a continuation line ("550-..."),
// which would leave the client waiting, or a meaningless 1xx or 3xx.
func Final(text string) (class int, ok bool) {
	code, last, ok := Parse(text)
	if !ok || !last {
		return 0, false
	}
	switch class = code / 100; class {
	case 2, 4, 5:
		return class, true
	}
	return 0, false
}

func digit(b byte) bool { return b >= '0' && b <= '9' }
