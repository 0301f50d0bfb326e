package config

import (
	"bufio"
	"errors"
	"io"
	"strings"
)

// ParseProxsmtpd reads a proxsmtpd.conf: one "Name: value" per line,
// split at the first colon, blanks around name and value trimmed, names
// case-insensitive, '#' lines and blank lines skipped, no trailing
// comments, the last occurrence of a name wins. Values are kept verbatim
// (backslashes, quotes, "${X}" and '%' are the filter's business).
//
// Names are proxsmtpd's options and sluice's own keys ("nats.url"). The
// map is keyed by lower-case name. An unknown name or a line without a
// colon is an *Error with proxsmtpd's text "invalid config line: NAME".
func ParseProxsmtpd(r io.Reader) (map[string]string, error) {
	out := make(map[string]string)
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			if perr := parseLine(line, out); perr != nil {
				return nil, perr
			}
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func parseLine(line string, out map[string]string) error {
	t := strings.Trim(line, cSpace)
	if t == "" || t[0] == '#' {
		return nil
	}
	i := strings.IndexByte(t, ':')
	if i < 0 {
		return &Error{Setting: t, Msg: "invalid config line: " + t}
	}
	name := strings.Trim(t[:i], cSpace)
	key := asciiLower(name) // strcasecmp, not Unicode folding
	if _, ok := lookup(key); !ok {
		// proxsmtpd's undocumented DebugFiles lands here too.
		return &Error{Setting: name, Msg: "invalid config line: " + name}
	}
	out[key] = strings.Trim(t[i+1:], cSpace)
	return nil
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
