package config

import (
	"errors"
	"maps"
	"os"
	"strings"
	"testing"
)

func TestParseProxsmtpd(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"empty", "", map[string]string{}},
		{"comments and blanks", "# c\n\n   # indented\n\t\n#OutAddress: 1\n", map[string]string{}},
		{"first colon split", "Header: X-A: b: c\n", map[string]string{"header": "X-A: b: c"}},
		{"blanks trimmed", "  OutAddress \t:\t 127.0.0.1:25 \t\r\n", map[string]string{"outaddress": "127.0.0.1:25"}},
		{"case-insensitive names", "OUTADDRESS: 1\nfilterCommand: cat\n", map[string]string{"outaddress": "1", "filtercommand": "cat"}},
		{"last wins", "Listen: 1\nlisten: 2\nLISTEN: 3\n", map[string]string{"listen": "3"}},
		{"verbatim value", `FilterCommand: sed -e 's/\r$//' "${HOME}" %d %% 'x' # not a comment` + "\n",
			map[string]string{"filtercommand": `sed -e 's/\r$//' "${HOME}" %d %% 'x' # not a comment`}},
		{"empty value", "Header:\n", map[string]string{"header": ""}},
		{"no final newline", "TimeOut: 5", map[string]string{"timeout": "5"}},
		{"sluice keys", "nats.url: nats://a:1, nats://b:2\nStore.S3.Endpoint: h:9000\n",
			map[string]string{"nats.url": "nats://a:1, nats://b:2", "store.s3.endpoint": "h:9000"}},
		{"CRLF file", "TimeOut: 5\r\nXClient: on\r\n", map[string]string{"timeout": "5", "xclient": "on"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseProxsmtpd(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseProxsmtpdErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Bogus: x\n", "invalid config line: Bogus"},
		{"  Bogus  : x\n", "invalid config line: Bogus"},
		{"DebugFiles: 1\n", "invalid config line: DebugFiles"},
		{"Nonsense line\n", "invalid config line: Nonsense line"},
		{"   OutAddress 25   \n", "invalid config line: OutAddress 25"},
		{": x\n", "invalid config line: "},
		{"OutAddress: 25\nnats.urls: x\n", "invalid config line: nats.urls"},
	}
	for _, tt := range tests {
		_, err := ParseProxsmtpd(strings.NewReader(tt.in))
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%q: got %v, want *Error", tt.in, err)
			continue
		}
		if e.Error() != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, e.Error(), tt.want)
		}
	}
}

// Debian's proxsmtp package ships the upstream sample configuration.
func TestParseDebianSample(t *testing.T) {
	f, err := os.Open("testdata/debian-proxsmtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseProxsmtpd(f)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"outaddress": "10026", "user": "_proxsmtp"}
	if !maps.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func FuzzParseProxsmtpd(f *testing.F) {
	for _, name := range []string{"testdata/debian-proxsmtpd.conf", "testdata/proxsmtpd-all-options.conf", "testdata/quirks.conf"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Add("Header: a:b\r\nlisten:1\nLISTEN :2\n#x\n")
	f.Add(": x\n")
	f.Add("x\n")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseProxsmtpd(strings.NewReader(in))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !strings.HasPrefix(e.Msg, "invalid config line: ") || strings.Contains(e.Msg, "\n") {
				t.Fatalf("bad error %q", err)
			}
			return
		}
		// Writing the result back out reads the same.
		var b strings.Builder
		for k, v := range got {
			if _, ok := lookup(k); !ok {
				t.Fatalf("unknown key %q accepted", k)
			}
			if v != strings.Trim(v, cSpace) || strings.ContainsAny(v, "\n") {
				t.Fatalf("value %q not trimmed to one line", v)
			}
			b.WriteString(k + ": " + v + "\n")
		}
		again, err := ParseProxsmtpd(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !maps.Equal(got, again) {
			t.Fatalf("re-parse: got %q, want %q", again, got)
		}
	})
}
