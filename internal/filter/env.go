package filter

import (
	"os"
	"strings"
)

// minContainedSecret is the shortest credential looked for inside other
// values (a URL with a password in it); shorter ones only match whole
// values, so that a short password does not remove half the environment.
const minContainedSecret = 8

// Inherited returns the variables of environ (the worker's os.Environ())
// that a filter inherits. The filter parses hostile content, so it never
// gets sluice's own settings (SLUICE_*), AWS_* (sluice reads its S3
// credentials there) or any variable holding one of secrets (the
// credentials sluice uses, wherever they came from), even when allow
// lists them. With allow empty every other variable passes, as proxsmtpd
// passes its whole environment; otherwise only those allow names: NAME,
// or PREFIX* for every name that starts with PREFIX. The filter contract's
// own variables (SENDER, ...) are always removed: Run sets them.
//
// A worker computes this once; the result is never nil, so that an
// allow-list matching nothing stays an empty environment in Spec.Environ.
func Inherited(environ, allow, secrets []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || isOwnVar(kv) || isSluiceVar(name) || holdsSecret(value, secrets) {
			continue
		}
		if len(allow) > 0 && !allowed(name, allow) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// isSluiceVar reports whether name is one of sluice's settings or in the
// AWS_ namespace sluice reads S3 credentials from.
func isSluiceVar(name string) bool {
	return strings.HasPrefix(name, "SLUICE_") || strings.HasPrefix(name, "AWS_")
}

// holdsSecret reports whether value is one of secrets or, for secrets long
// enough not to match by chance, contains one.
func holdsSecret(value string, secrets []string) bool {
	for _, s := range secrets {
		switch {
		case s == "":
		case value == s:
			return true
		case len(s) >= minContainedSecret && strings.Contains(value, s):
			return true
		}
	}
	return false
}

// allowed reports whether name matches one of allow's NAME or PREFIX*.
func allowed(name string, allow []string) bool {
	for _, a := range allow {
		if prefix, ok := strings.CutSuffix(a, "*"); ok {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == a {
			return true
		}
	}
	return false
}

// inherited is the base environment of a run: what the worker computed,
// or, for a Spec built by hand, the process's own without sluice's
// variables.
func (s Spec) inherited() []string {
	if s.Environ != nil {
		return s.Environ
	}
	return Inherited(os.Environ(), nil, nil)
}

// maxRecipientsVar bounds RECIPIENTS. Linux refuses to start a program
// with one environment string over 128 KiB (E2BIG, MAX_ARG_STRLEN), and a
// thousand long addresses make more; what does not fit goes to
// RECIPIENTS_FILE.
const maxRecipientsVar = 96 << 10

// recipientsFile writes every recipient, one per line, to a private file
// in dir when they do not all fit RECIPIENTS, and returns its path, or ""
// when they fit. The caller removes it after the run.
func recipientsFile(dir string, rcpts []string) (string, error) {
	if _, all := fitRecipients(rcpts); all {
		return "", nil
	}
	f, err := os.CreateTemp(dir, "sluice-rcpts.*") // 0600, as the spool file
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, r := range rcpts {
		b.WriteString(clean(r) + "\n")
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// fitRecipients joins as many whole recipients as fit maxRecipientsVar,
// and reports whether that is all of them.
func fitRecipients(rcpts []string) (string, bool) {
	var b strings.Builder
	for i, r := range rcpts {
		r = clean(r)
		if b.Len()+len(r)+1 > maxRecipientsVar {
			return b.String(), false
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(r)
	}
	return b.String(), true
}

// environ builds the filter's environment from base (Spec.inherited), the
// message's Env, the spool directory, in file mode the spool file (email
// != "") and, for more recipients than RECIPIENTS holds, the file naming
// them all (rcptFile != "").
func environ(base []string, env Env, tempDir, email, rcptFile string) []string {
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
		rcpts, _ := fitRecipients(env.Recipients)
		out = append(out, "RECIPIENTS="+rcpts)
	}
	if rcptFile != "" {
		out = append(out, "RECIPIENTS_FILE="+clean(rcptFile))
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
	if env.TLSVersion != "" {
		out = append(out, "TLS_VERSION="+clean(env.TLSVersion), "TLS_CIPHER="+clean(env.TLSCipher))
	}
	out = append(out, "TMPDIR="+clean(tempDir))
	if email != "" {
		out = append(out, "EMAIL="+clean(email))
	}
	return out
}

// isOwnVar reports whether kv sets one of the variables the filter
// contract defines (behaviour.md#filtering). Any copy in the process's own environment is
// removed, so that a daemon started with, say, SENDER set cannot leak it to
// a filter when no MAIL applies.
func isOwnVar(kv string) bool {
	name, _, _ := strings.Cut(kv, "=")
	switch name {
	case "SENDER", "RECIPIENTS", "RECIPIENTS_FILE", "CLIENT", "SERVER", "REMOTE", "REMOTE_HELO", "TLS_VERSION", "TLS_CIPHER", "TMPDIR", "EMAIL":
		return true
	}
	return false
}

// clean drops control characters from an environment value. The values
// come from the SMTP client; the session already refuses most of them,
// this is defence in depth for filters that paste them into shell text or
// log lines (behaviour.md#xforward). A NUL would also make exec fail.
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
