package config

import (
	"reflect"
	"strings"
)

// readPlain reads every setting whose row names its Config field, in
// table order: the row states the type and the checks once, and this is
// the only parser they need. Settings whose value depends on others
// (derived defaults, cross-checks) have no field in the table and are
// read by the section builders after this.
func (l *loader) readPlain(c *Config) {
	for _, s := range settings {
		if s.field != nil {
			l.readInto(s, s.field(c))
		}
	}
}

// readInto parses setting s into ptr, a pointer to its Config field.
func (l *loader) readInto(s setting, ptr any) {
	v := reflect.ValueOf(ptr).Elem()
	switch s.kind {
	case kindBool:
		v.SetBool(l.boolean(s.key))
	case kindInt:
		v.SetInt(int64(l.integer(s.key, s.lo, s.hi)))
	case kindDuration:
		d := l.duration(s.key)
		if s.positive && d <= 0 {
			l.failf(s.key, "must be positive")
		}
		v.Set(reflect.ValueOf(d))
	case kindSize:
		v.SetInt(l.size(s.key))
	case kindList:
		if s.networks {
			v.Set(reflect.ValueOf(l.prefixes(s.key)))
			return
		}
		v.Set(reflect.ValueOf(l.list(s)))
	default:
		v.SetString(l.str(s))
	}
}

// str reads a string setting: one of its words, an existing file, or text
// that passes its check.
func (l *loader) str(s setting) string {
	t := l.text(s.key)
	switch {
	case s.words != nil:
		return l.word(s, t)
	case s.file:
		return l.file(s.key)
	case s.raw:
		return t
	}
	t = strings.TrimSpace(t)
	if s.check != nil {
		if err := s.check(t); err != nil {
			l.failf(s.key, "%v", err)
		}
	}
	return t
}

// word maps t to the value of one of s's words (an alias maps to the word
// after "="), case-insensitively.
func (l *loader) word(s setting, t string) string {
	in := strings.ToLower(strings.TrimSpace(t))
	var names []string
	for _, w := range s.words {
		name, value, alias := strings.Cut(w, "=")
		if !alias {
			value = name
			names = append(names, name)
		}
		if in == name {
			return value
		}
	}
	l.failf(s.key, "must be %s, not %q", strings.Join(names, " or "), t)
	return ""
}

// list reads a comma-separated list, checking each element.
func (l *loader) list(s setting) []string {
	var out []string
	for _, e := range splitList(l.text(s.key)) {
		if s.check != nil {
			if err := s.check(e); err != nil {
				l.failf(s.key, "%v", err)
			}
		}
		out = append(out, e)
	}
	return out
}

// optional applies check to a value that is set; empty means off.
func optional(check func(string) error) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		return check(s)
	}
}

// Field pointers for the table: each returns the address of its field.
func fieldOf[T any](f func(*Config) *T) func(*Config) any {
	return func(c *Config) any { return f(c) }
}
