package filter

import (
	"strings"
)

// environ builds the filter's environment from base (the process's own,
// os.Environ()), the message's Env, the spool directory and, in file mode,
// the spool file (email != "").
func environ(base []string, env Env, tempDir, email string) []string {
	out := make([]string, 0, len(base)+8)
	for _, kv := range base {
		if !isOwnVar(kv) {
			out = append(out, kv)
		}
	}
	if env.Sender != nil {
		out = append(out, "SENDER="+clean(*env.Sender))
	}
	if len(env.Recipients) > 0 {
		rcpts := make([]string, len(env.Recipients))
		for i, r := range env.Recipients {
			rcpts[i] = clean(r)
		}
		out = append(out, "RECIPIENTS="+strings.Join(rcpts, "\n"))
	}
	out = append(out, "CLIENT="+clean(env.Client))
	if env.Server != "" {
		out = append(out, "SERVER="+clean(env.Server))
	}
	if env.Remote != nil {
		out = append(out, "REMOTE="+clean(*env.Remote))
	}
	if env.RemoteHelo != nil {
		out = append(out, "REMOTE_HELO="+clean(*env.RemoteHelo))
	}
	out = append(out, "TMPDIR="+clean(tempDir))
	if email != "" {
		out = append(out, "EMAIL="+clean(email))
	}
	return out
}

// isOwnVar reports whether kv sets one of the variables the filter
// contract defines (B31). Any copy in the process's own environment is
// removed, so that a daemon started with, say, SENDER set cannot leak it to
// a filter when no MAIL applies.
func isOwnVar(kv string) bool {
	name, _, _ := strings.Cut(kv, "=")
	switch name {
	case "SENDER", "RECIPIENTS", "CLIENT", "SERVER", "REMOTE", "REMOTE_HELO", "TMPDIR", "EMAIL":
		return true
	}
	return false
}

// clean drops control characters from an environment value. The values
// come from the SMTP client; the session already refuses most of them,
// this is defence in depth for filters that paste them into shell text or
// log lines (COMPAT "Do better" 6). A NUL would also make exec fail.
func clean(s string) string {
	if strings.IndexFunc(s, isControl) < 0 {
		return s
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if !isControlByte(s[i]) {
			sb.WriteByte(s[i])
		}
	}
	return sb.String()
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isControlByte(b byte) bool { return b < 0x20 || b == 0x7f }
