package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// loader merges the sources in viper and remembers where each key was set,
// so that an error names the file, variable or flag to fix.
type loader struct {
	role     Role
	env      map[string]string
	path     string
	v        *viper.Viper
	fileKeys map[string]bool
	envKeys  map[string]string      // key -> SLUICE_ variable that set it
	flagKeys map[string]string      // long flag name -> key
	flags    map[string]*pflag.Flag // key -> its flag
	warnings []string
	err      *Error
}

func newLoader(role Role, env map[string]string, path string) *loader {
	l := &loader{
		role:     role,
		env:      env,
		path:     path,
		v:        viper.New(),
		fileKeys: make(map[string]bool),
		envKeys:  make(map[string]string),
		flagKeys: make(map[string]string),
		flags:    make(map[string]*pflag.Flag),
	}
	for _, s := range settings {
		if s.def != "" {
			l.v.SetDefault(s.key, s.def)
		}
		if !s.proxsmtpd {
			l.flagKeys[FlagName(s.key)] = s.key
		}
	}
	return l
}

// readFile merges the configuration file into viper. A missing file is
// only a warning, as for proxsmtpd; the checks that follow then say what
// is missing.
func (l *loader) readFile() *Error {
	if l.path == "" {
		return nil
	}
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		l.warn("configuration file not found: " + l.path)
		return nil
	}
	if err != nil {
		return &Error{Source: l.path, Msg: "couldn't read configuration file: " + reason(err)}
	}
	defer f.Close()

	switch ext := strings.ToLower(filepath.Ext(l.path)); ext {
	case ".yaml", ".yml":
		return l.readStructured(f, "yaml")
	case ".json":
		return l.readStructured(f, "json")
	}
	m, err := ParseProxsmtpd(f)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Source = l.path
			return e
		}
		return &Error{Source: l.path, Msg: "couldn't read configuration file: " + reason(err)}
	}
	nested := make(map[string]any)
	for k, val := range m {
		l.fileKeys[k] = true
		setNested(nested, k, val)
	}
	_ = l.v.MergeConfigMap(nested) // never fails
	return nil
}

// readStructured reads the YAML or JSON form: the same keys, with
// "nats", "store", "store.s3" and "worker" as nested maps.
func (l *loader) readStructured(r io.Reader, typ string) *Error {
	fv := viper.New()
	fv.SetConfigType(typ)
	if err := fv.ReadConfig(r); err != nil {
		return &Error{Source: l.path, Msg: "invalid " + strings.ToUpper(typ) + ": " + oneLine(reason(err))}
	}
	keys := fv.AllKeys()
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := lookup(k); ok {
			// A YAML null ("Header:") leaves the key unset.
			if fv.Get(k) != nil {
				l.fileKeys[k] = true
			}
			continue
		}
		if groups[k] && fv.Get(k) == nil {
			continue
		}
		return &Error{Source: l.path, Setting: k, Msg: "unknown setting: " + k}
	}
	_ = l.v.MergeConfigMap(fv.AllSettings()) // never fails
	return nil
}

// readEnv merges SLUICE_* variables over the file. Empty ones count as
// unset; unknown ones are reported, not fatal, since other tools may
// share the prefix.
func (l *loader) readEnv() {
	byName := make(map[string]string, len(settings))
	for _, s := range settings {
		byName[EnvName(s.key)] = s.key
	}
	names := make([]string, 0)
	for name := range l.env {
		if strings.HasPrefix(name, "SLUICE_") && name != "SLUICE_CONFIG" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	nested := make(map[string]any)
	for _, name := range names {
		key, ok := byName[name]
		if !ok {
			l.warn("ignoring unknown environment variable " + name)
			continue
		}
		if l.env[name] == "" {
			continue
		}
		l.envKeys[key] = name
		setNested(nested, key, l.env[name])
	}
	_ = l.v.MergeConfigMap(nested)
}

// setNested stores "a.b.c" as m[a][b][c], the shape viper merges.
func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		sub, ok := m[p].(map[string]any)
		if !ok {
			sub = make(map[string]any)
			m[p] = sub
		}
		m = sub
	}
	m[parts[len(parts)-1]] = val
}

// text is the winning value of key as text. For sluice's settings an
// empty value means the default.
func (l *loader) text(key string) string {
	s, _ := lookup(key)
	t, err := toText(l.v.Get(key), s.kind == kindList)
	if err != nil {
		l.fail(key, s.display()+": "+err.Error())
		return ""
	}
	if !s.proxsmtpd && strings.TrimSpace(t) == "" {
		return s.def
	}
	return t
}

// toText turns what viper holds (text from the proxsmtpd reader, the
// environment and flags; typed values from YAML and JSON) into text.
func toText(val any, list bool) (string, error) {
	switch x := val.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		if list {
			parts := make([]string, 0, len(x))
			for _, e := range x {
				t, err := toText(e, false)
				if err != nil {
					return "", err
				}
				parts = append(parts, t)
			}
			return strings.Join(parts, ","), nil
		}
	case []string:
		if list {
			return strings.Join(x, ","), nil
		}
	}
	return "", fmt.Errorf("must be a single value, not %T", val)
}

// present reports whether any source other than the defaults gave key.
func (l *loader) present(key string) bool {
	if f := l.flags[key]; f != nil && f.Changed {
		return true
	}
	_, env := l.envKeys[key]
	return env || l.fileKeys[key]
}

// explicit reports whether key was given a non-empty value.
func (l *loader) explicit(key string) bool {
	if !l.present(key) {
		return false
	}
	t, _ := toText(l.v.Get(key), true)
	return strings.TrimSpace(t) != ""
}

// source names where the winning value of key came from: its flag, its
// environment variable, else the configuration file (also for defaults
// that clash with it).
func (l *loader) source(key string) string {
	if f := l.flags[key]; f != nil && f.Changed {
		return "--" + f.Name
	}
	if name, ok := l.envKeys[key]; ok {
		return name
	}
	return l.path
}

// fail records the first error; msg is the whole message.
func (l *loader) fail(key, msg string) {
	if l.err != nil {
		return
	}
	s, _ := lookup(key)
	l.err = &Error{Source: l.source(key), Setting: s.display(), Msg: msg}
}

// failf records the first error of a sluice key as "key: problem".
func (l *loader) failf(key, format string, args ...any) {
	l.fail(key, key+": "+fmt.Sprintf(format, args...))
}

func (l *loader) warn(msg string) { l.warnings = append(l.warnings, msg) }

// reason is an error's text without the path an *os.PathError repeats.
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
