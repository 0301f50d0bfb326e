// Package header implements proxsmtpd's Header option: a template, expanded
// for each message, for header lines the edge adds to what it delivers
// (behaviour.md#header). Where the lines go in the message is the wire package's job
// (wire.DataWriterOptions).
package header

import (
	"bytes"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxLength caps the expanded header, final CRLF excluded (proxsmtpd's
// MAX_HEADER_LENGTH - 1).
const MaxLength = 1023

type kind uint8

const (
	kLiteral kind = iota
	kClient
	kLocal
	kDate
)

type segment struct {
	kind kind
	text string // kLiteral only
}

// Template is a parsed Header value. The zero Template adds nothing.
type Template struct {
	segs  []segment
	onTop bool
}

// Parse parses proxsmtpd's Header value: "%i" is the client IP, "%l" the
// local IP the client connected to, "%d" the date, "%%" a '%'; any other
// "%q" disappears with the warning "invalid header symbol: %q". A backslash
// escapes the next character: "\r", "\n" and "\t" are CR, LF and TAB, "\x"
// is x for any other x (so "\%" is a literal '%'). A '%' or '\' that ends the
// value is kept as it is. An empty value, or one that leaves nothing, gives
// the zero Template.
func Parse(s string) (Template, []string) {
	var (
		segs  []segment
		warns []string
		lit   strings.Builder
	)
	flush := func() {
		if lit.Len() > 0 {
			segs = append(segs, segment{kind: kLiteral, text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case 'r':
				lit.WriteByte('\r')
			case 'n':
				lit.WriteByte('\n')
			case 't':
				lit.WriteByte('\t')
			default:
				lit.WriteByte(s[i]) // the rest of a multi-byte character follows as literal bytes
			}
		case c == '%' && i+1 < len(s):
			switch s[i+1] {
			case 'i':
				flush()
				segs = append(segs, segment{kind: kClient})
			case 'l':
				flush()
				segs = append(segs, segment{kind: kLocal})
			case 'd':
				flush()
				segs = append(segs, segment{kind: kDate})
			case '%':
				lit.WriteByte('%')
			default:
				_, size := utf8.DecodeRuneInString(s[i+1:])
				warns = append(warns, "invalid header symbol: %"+s[i+1:i+1+size])
				i += size - 1
			}
			i++
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	t := Template{segs: segs}
	if len(t.segs) > 0 {
		// Decided from the template itself: IPs and dates never spell "Received:".
		t.onTop = hasPrefixFold(t.Expand("", "", time.Time{}), "received:")
	}
	return t, warns
}

// IsZero reports whether the template adds nothing (Header unset).
func (t Template) IsZero() bool { return len(t.segs) == 0 }

// OnTop reports whether the header starts with "Received:" (any case) and so
// goes at the very top of the message rather than at the end of the header
// block (behaviour.md#header).
func (t Template) OnTop() bool { return t.onTop }

// Expand returns the header lines to insert for one message: the template
// expanded, line endings normalised to CRLF, empty and whitespace-only lines
// left out (such a line would end the header block early), cut at MaxLength
// bytes, and a CRLF appended. %d is an RFC 5322 date in now's location, with
// the zone name as a comment: "Thu, 26 Nov 2026 00:55:59 +0530 (IST)". It
// returns nil when there is nothing to add.
func (t Template) Expand(clientIP, localIP string, now time.Time) []byte {
	if t.IsZero() {
		return nil
	}
	var raw strings.Builder
	for _, s := range t.segs {
		switch s.kind {
		case kLiteral:
			raw.WriteString(s.text)
		case kClient:
			raw.WriteString(clientIP)
		case kLocal:
			raw.WriteString(localIP)
		case kDate:
			raw.WriteString(FormatDate(now))
		}
	}
	return lines(raw.String())
}

// lines normalises, drops blank lines and caps; see Expand.
func lines(s string) []byte {
	out := make([]byte, 0, min(len(s)+2, MaxLength+2))
	for len(s) > 0 {
		var line string
		if i := strings.IndexAny(s, "\r\n"); i >= 0 {
			line = s[:i]
			if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			s = s[i+1:]
		} else {
			line, s = s, ""
		}
		if blank(line) {
			continue
		}
		sep := 0
		if len(out) > 0 {
			sep = 2
		}
		room := MaxLength - len(out) - sep
		if room <= 0 {
			break
		}
		if len(line) > room {
			line = cutRunes(line, room)
			if blank(line) {
				break
			}
			s = ""
		}
		if sep > 0 {
			out = append(out, '\r', '\n')
		}
		out = append(out, line...)
	}
	if len(out) == 0 {
		return nil
	}
	return append(out, '\r', '\n')
}

// cutRunes cuts s to at most n bytes without splitting a UTF-8 character.
func cutRunes(s string, n int) string {
	cut := s[:n]
	j := len(cut) - 1
	for j > 0 && j > len(cut)-utf8.UTFMax && !utf8.RuneStart(cut[j]) {
		j--
	}
	if j >= 0 && !utf8.FullRuneInString(cut[j:]) && utf8.FullRuneInString(s[j:]) {
		return cut[:j]
	}
	return cut
}

func blank(line string) bool {
	return strings.Trim(line, " \t\v\f") == ""
}

// FormatDate is the RFC 5322 date used for %d: time.RFC1123Z plus the zone
// name as a comment, e.g. "Thu, 26 Nov 2026 00:55:59 +0530 (IST)". The
// comment is left out when the zone has no usable name.
func FormatDate(t time.Time) string {
	s := t.Format(time.RFC1123Z)
	name, _ := t.Zone()
	clean := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '-' {
			return r
		}
		return -1
	}, name)
	if clean == "" {
		return s
	}
	return s + " (" + clean + ")"
}

func hasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && bytes.EqualFold(b[:len(prefix)], []byte(prefix))
}
