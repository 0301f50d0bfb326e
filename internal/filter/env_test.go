package filter

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestInherited(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin:/bin",
		"HOME=/var/lib/sluice",
		"LANG=C.UTF-8",
		"LC_ALL=C",
		"LC_CTYPE=C",
		"SPAMD_HOST=127.0.0.1",
		"SLUICE_STORE_S3_SECRET_KEY=s3-secret-value",
		"SLUICE_FILTERCOMMAND=cat",
		"AWS_SECRET_ACCESS_KEY=aws-secret-value",
		"AWS_REGION=eu-west-1",
		"SENDER=leak",
		"COPY_OF_SECRET=nats-password-value",
		"NATS_URL=nats://worker:nats-password-value@nats.example:4222",
		"SHORT=pw",
		"CONTAINS_SHORT=xpwx",
		"EMPTY=",
		"NOEQUALS",
	}
	secrets := []string{"s3-secret-value", "nats-password-value", "pw", ""}
	tests := []struct {
		name  string
		allow []string
		want  []string
	}{
		{"no allow-list", nil, []string{
			"PATH=/usr/bin:/bin", "HOME=/var/lib/sluice", "LANG=C.UTF-8", "LC_ALL=C", "LC_CTYPE=C",
			"SPAMD_HOST=127.0.0.1", "CONTAINS_SHORT=xpwx", "EMPTY=",
		}},
		{"names and prefixes", []string{"PATH", "LC_*", "SPAMD_*", "MISSING"}, []string{
			"PATH=/usr/bin:/bin", "LC_ALL=C", "LC_CTYPE=C", "SPAMD_HOST=127.0.0.1",
		}},
		{"a name is not a prefix", []string{"LC"}, []string{}},
		// Listing them does not let sluice's settings or credentials through.
		{"everything", []string{"*"}, []string{
			"PATH=/usr/bin:/bin", "HOME=/var/lib/sluice", "LANG=C.UTF-8", "LC_ALL=C", "LC_CTYPE=C",
			"SPAMD_HOST=127.0.0.1", "CONTAINS_SHORT=xpwx", "EMPTY=",
		}},
		{"sluice's own listed", []string{"SLUICE_*", "AWS_REGION", "COPY_OF_SECRET", "SENDER", "PATH"}, []string{
			"PATH=/usr/bin:/bin",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Inherited(environ, tt.allow, secrets)
			if got == nil {
				t.Fatal("Inherited returned nil")
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestSpecEnvironIsTheBase(t *testing.T) {
	t.Setenv("FILTER_TEST_NOT_LISTED", "x")
	dump := filepath.Join(t.TempDir(), "env")
	spec := Spec{Command: "cat /proc/$$/environ > " + dump, Environ: Inherited(os.Environ(), []string{"PATH"}, nil)}
	res, _, err := run(t, spec, Env{Client: "192.0.2.1"}, msg)
	if err != nil || res.Action != Accept {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	got := readEnv(t, dump)
	want := map[string]string{"PATH": os.Getenv("PATH"), "CLIENT": "192.0.2.1", "TMPDIR": spec.TempDir}
	if spec.TempDir == "" {
		want["TMPDIR"] = got["TMPDIR"] // run picked one
	}
	if len(got) != len(want) {
		t.Errorf("environment %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}
