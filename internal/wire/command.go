package wire

import (
	"strings"
)

// Command is one command line as the edge reads it, and as it relays it.
type Command struct {
	Verb string // the first word, upper-cased
	Arg  string // the rest after the whitespace that ends the verb, trailing whitespace removed
	Line string // what goes upstream (see ParseCommand)
}

// ParseCommand splits a command line the way Postfix's smtpd tokenises it:
// leading whitespace is skipped and the verb ends at the first space or tab.
// A line that hid its verb behind whitespace (" RSET", "MAIL\tFROM:") is
// recognised, and relayed as the verb, one space and Arg, so that the
// upstream and the edge can never read two different commands in one
// line. Any other line is relayed as it came (behaviour.md#commands).
func ParseCommand(line string) Command {
	trimmed := strings.Trim(line, " \t")
	verb, arg := trimmed, ""
	if i := strings.IndexAny(trimmed, " \t"); i >= 0 {
		verb, arg = trimmed[:i], strings.TrimLeft(trimmed[i+1:], " \t")
	}
	c := Command{Verb: upperASCII(verb), Arg: arg, Line: line}
	if plain := strings.HasPrefix(line, verb) && (len(line) == len(verb) || line[len(verb)] == ' '); !plain {
		c.Line = verb
		if arg != "" {
			c.Line += " " + arg
		}
	}
	return c
}

// Verb is ParseCommand's verb and argument: "MAIL FROM:<a>" gives "MAIL",
// "FROM:<a>"; "\tdata  now" gives "DATA", "now".
func Verb(line string) (verb, arg string) {
	c := ParseCommand(line)
	return c.Verb, c.Arg
}

// upperASCII upper-cases ASCII letters only, so that the length and the
// other bytes of a hostile line never change.
func upperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'a' && c <= 'z' {
					b[j] = c - 'a' + 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

func isControl(c byte) bool { return c < 0x20 || c == 0x7f }

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if isControl(s[i]) {
			return true
		}
	}
	return false
}

// xforwardNames are the XFORWARD attributes Postfix defines.
var xforwardNames = [...]string{"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"}

// ParseXForward parses the argument of an XFORWARD command into its
// attributes: whole NAME=value tokens separated by spaces, in any order,
// names upper-cased; tokens without '=' and unknown names are ignored, and a
// repeated attribute keeps its last value. Values are xtext-decoded ("+XX"),
// lose enclosing [brackets] and, for ADDR, a leading "IPV6:"; the values
// [UNAVAILABLE] and [TEMPUNAVAIL] (bracketed or not), empty values and values
// holding a control character are left out (behaviour.md#xforward).
func ParseXForward(arg string) map[string]string {
	attrs := make(map[string]string)
	for _, tok := range strings.FieldsFunc(arg, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\r' || r == '\n'
	}) {
		eq := strings.IndexByte(tok, '=')
		if eq <= 0 {
			continue
		}
		name := upperASCII(tok[:eq])
		if !knownXForward(name) {
			continue
		}
		val, ok := xforwardValue(name, tok[eq+1:])
		if !ok {
			delete(attrs, name)
			continue
		}
		attrs[name] = val
	}
	return attrs
}

func knownXForward(name string) bool {
	for _, n := range xforwardNames {
		if n == name {
			return true
		}
	}
	return false
}

func xforwardValue(name, raw string) (string, bool) {
	v := xtextDecode(raw)
	if len(v) >= 2 && v[0] == '[' && v[len(v)-1] == ']' {
		v = v[1 : len(v)-1]
	}
	if strings.EqualFold(v, "UNAVAILABLE") || strings.EqualFold(v, "TEMPUNAVAIL") {
		return "", false
	}
	if name == "ADDR" && len(v) >= 5 && strings.EqualFold(v[:5], "IPV6:") {
		v = v[5:]
	}
	if v == "" || hasControl(v) {
		return "", false
	}
	return v, true
}

// xtextDecode decodes RFC 3461 xtext "+XX" hex escapes; a '+' not followed
// by two hex digits is kept as it is.
func xtextDecode(s string) string {
	if strings.IndexByte(s, '+') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '+' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b = append(b, hi<<4|lo)
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
