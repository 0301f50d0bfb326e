package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// samples gives, for a setting readPlain reads, a valid value other than
// its default and an invalid one ("" when every text is valid).
func samples(t *testing.T, s setting) (valid, invalid string) {
	t.Helper()
	byKey := map[string][2]string{
		"http_listen":              {"127.0.0.1:9999", "no port"},
		"nats.url":                 {"nats://127.0.0.1:4333", "ftp://127.0.0.1"},
		"nats.stream":              {"OTHER_STREAM", "has space"},
		"nats.consumer":            {"other-consumer", "has space"},
		"nats.subject":             {"other.jobs", "has space"},
		"nats.verdict_prefix":      {"other.verdicts", "has space"},
		"store.s3.bucket":          {"other-bucket", "Not A Bucket"},
		"filter.env_allow":         {"LANG,LC_*", "A=B"},
		"store.s3.part_size":       {"32MiB", "lots"},
		"nats.max_age":             {"2h", "0s"},
		"nats.domain":              {"core", "has.dot"},
		"nats.publish_timeout":     {"20s", "0s"},
		"upstream.tls_server_name": {"mx.example.org", ""},
		"upstream.tls":             {"opportunistic", "bogus"},
		"filter.milters":           {"inet:127.0.0.1:8891, unix:/run/milter.sock", "tcp:somewhere"},
		"worker.replay_pools":      {"rules-test, night", "has.dot"},
	}
	if v, ok := byKey[s.key]; ok {
		return v[0], v[1]
	}
	switch {
	case s.kind == kindBool:
		if s.def == "true" {
			return "off", "maybe"
		}
		return "on", "maybe"
	case s.kind == kindInt:
		return fmt.Sprint(s.lo + 1), "many"
	case s.kind == kindDuration:
		return "7m", "soon"
	case s.kind == kindSize:
		return "7MiB", "lots"
	case s.networks:
		return "10.0.0.0/8, 192.0.2.1", "not-a-network"
	case s.words != nil:
		w, _, _ := strings.Cut(s.words[len(s.words)-1], "=")
		return w, "bogus"
	case s.file:
		p := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p, filepath.Join(t.TempDir(), "missing")
	case s.raw:
		return "s3cret-value", ""
	}
	t.Fatalf("no sample value for %s", s.key)
	return "", ""
}

// Every setting the table gives a field is read into that field, the
// same from the configuration file, the environment and a flag, and an
// invalid value is an error naming the setting: a new row is covered
// here without a new test.
func TestTableDrivesParsing(t *testing.T) {
	base := "OutAddress: 2525\n"
	plain := mustLoad(t, Edge, []string{"-f", writeConf(t, "base.conf", base)}, nil)
	n := 0
	for _, s := range settings {
		if s.field == nil {
			continue
		}
		n++
		t.Run(s.key, func(t *testing.T) {
			valid, invalid := samples(t, s)
			// Settings that go in pairs get their partner from the
			// environment.
			var partner []string
			switch s.key {
			case "nats.password":
				partner = []string{"SLUICE_NATS_USER=sluice"}
			case "nats.tls_cert", "nats.tls_key":
				other, _ := samples(t, setting{key: "other", kind: kindString, file: true})
				partner = []string{"SLUICE_NATS_TLS_CERT=" + other, "SLUICE_NATS_TLS_KEY=" + other}
			case "upstream.tls_cert_file", "upstream.tls_key_file":
				other, _ := samples(t, setting{key: "other", kind: kindString, file: true})
				partner = []string{"SLUICE_UPSTREAM_TLS_CERT_FILE=" + other, "SLUICE_UPSTREAM_TLS_KEY_FILE=" + other}
			case "tls.cert_file", "tls.key_file", "tls.required":
				other, _ := samples(t, setting{key: "other", kind: kindString, file: true})
				partner = []string{"SLUICE_TLS_CERT_FILE=" + other, "SLUICE_TLS_KEY_FILE=" + other}
			}
			def := reflect.ValueOf(s.field(plain)).Elem().Interface()
			sources := map[string]struct{ args, env []string }{
				"file": {[]string{"-f", writeConf(t, "p.conf", base+s.key+": "+valid+"\n")}, without(partner, s.key)},
				"env":  {[]string{"-f", writeConf(t, "p.conf", base)}, append(without(partner, s.key), EnvName(s.key)+"="+valid)},
				"flag": {[]string{"-f", writeConf(t, "p.conf", base), "--" + FlagName(s.key) + "=" + valid}, without(partner, s.key)},
			}
			var got []any
			for name, src := range sources {
				c := mustLoad(t, Edge, src.args, src.env)
				v := reflect.ValueOf(s.field(c)).Elem().Interface()
				if reflect.DeepEqual(v, def) {
					t.Errorf("%s %q: field still %v, the default", name, valid, v)
				}
				got = append(got, v)
			}
			for _, v := range got[1:] {
				if !reflect.DeepEqual(v, got[0]) {
					t.Errorf("the sources disagree: %v", got)
				}
			}
			if invalid == "" {
				return
			}
			e := loadErr(t, Edge, []string{"-f", writeConf(t, "p.conf", base)}, []string{EnvName(s.key) + "=" + invalid})
			if e.Setting != s.display() {
				t.Errorf("%q: error %q names %q, want %q", invalid, e.Error(), e.Setting, s.display())
			}
		})
	}
	if n < 30 {
		t.Errorf("only %d settings read from the table", n)
	}
}

// without is env without the entry for key.
func without(env []string, key string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, EnvName(key)+"=") {
			out = append(out, e)
		}
	}
	return out
}
