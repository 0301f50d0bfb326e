package filter

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const wantTooLarge = "451 4.3.4 Filter output too large, please try again later"

func assertTooLarge(t *testing.T, res Result, limit int64) {
	t.Helper()
	if res.Action != TempFail || res.Reply != wantTooLarge || res.Status != "FILTER-ERROR" {
		t.Errorf("result %+v, want TempFail %q", res, wantTooLarge)
	}
	if !strings.Contains(res.Detail, "filter.max_output_size") || !strings.Contains(res.Detail, fmt.Sprint(limit)) {
		t.Errorf("Detail = %q, want the setting and its value", res.Detail)
	}
}

func TestMaxOutputPipe(t *testing.T) {
	const limit = 100_000
	tests := []struct {
		name, cmd string
		tooLarge  bool
	}{
		{"under", "head -c 99999 /dev/zero", false},
		{"exactly", "head -c 100000 /dev/zero", false},
		{"one more", "head -c 100001 /dev/zero", true},
		// Never stops by itself, and ignores SIGTERM: only the limit ends it.
		{"endless", "trap '' TERM; cat /dev/zero", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res, out, err := run(t, Spec{Command: tt.cmd, MaxOutput: limit, KillGrace: 300 * time.Millisecond}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(out) > limit {
				t.Errorf("%d bytes reached out, more than the limit", len(out))
			}
			if !tt.tooLarge {
				if res.Action != Accept {
					t.Errorf("result %+v, want Accept", res)
				}
				return
			}
			assertTooLarge(t, res, limit)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("Run took %s", took)
			}
		})
	}
}

func TestMaxOutputFile(t *testing.T) {
	limit := int64(len(msg) + 10)
	tests := []struct {
		name, cmd string
		tooLarge  bool
	}{
		{"unchanged", "true", false},
		{"grown to the limit", `printf '0123456789' >> "$EMAIL"`, false},
		{"grown past it", `printf '0123456789x' >> "$EMAIL"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, out, err := run(t, Spec{Command: tt.cmd, Mode: File, MaxOutput: limit}, stdEnv(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.tooLarge {
				if res.Action != Accept || int64(len(out)) > limit {
					t.Errorf("result %+v, %d bytes; want Accept", res, len(out))
				}
				return
			}
			assertTooLarge(t, res, limit)
			if res.ExitCode != 0 {
				t.Errorf("ExitCode = %d, want the filter's 0", res.ExitCode)
			}
		})
	}
}
