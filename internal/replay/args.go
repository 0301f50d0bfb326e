package replay

import (
	"github.com/sluice-mail/sluice/internal/milter"

	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// ErrHelp is returned by ParseArgs for -h or --help.
var ErrHelp = pflag.ErrHelp

// Usage is the replay command's own part of its usage text; the
// configuration flags it shares with edge and worker follow it.
const Usage = `usage: replay [-f configfile] [--since DAY] [--until DAY]
              [--filter-command CMD] [--filter-type pipe|file]
              [--milter ADDRESS ...]
              [--concurrency N] [--format text|json] [--only-changed]
              [--limit N] [--setting=value ...]

Runs the messages sluice stored (store.*) through a filter and reports the
verdicts that would change, before that filter is switched on.

Read-only: replay never writes to the message store, never delivers,
answers or forwards any message, and needs no NATS server. The filter's
output is hashed (sha256) and compared, not kept.

The filter is FilterCommand, FilterType, FilterTimeout and TempDirectory
from the configuration (-f, SLUICE_*), unless --filter-command or
--filter-type say otherwise; then the milters of filter.milters, unless
--milter names others. Each message is filtered with the environment
of its first run (SENDER, RECIPIENTS, CLIENT, ...), rebuilt from its
verdict.json. Messages without a verdict.json (still in flight, or whose
record failed) are listed as skipped.

      --since DAY             first day to replay, UTC: YYYY-MM-DD, today or
                              yesterday (default: the day before --until)
      --until DAY             last day to replay, inclusive (default: today)
      --filter-command CMD    the filter to try, run as /bin/sh -c CMD
                              (default: FilterCommand; "" passes mail through)
      --filter-type TYPE      pipe or file (default: FilterType)
      --milter ADDRESS        a milter to try after the filter command,
                              inet:host:port or unix:/path; repeat for
                              several, in order (default: filter.milters;
                              --milter '' tries none)
      --concurrency N         filters running at once (default 2)
      --format FORMAT         text (one line per message, then a summary) or
                              json (one object per line, then a summary object)
      --only-changed          list only changed messages and errors; the
                              summary still counts every message
      --limit N               replay at most N messages; 0 = all (default 0)
  -h, --help                  this text

Exit status: 0 when the replay ran, whatever changed; 1 when the store could
not be read (opening, listing, or any message: see "errors" in the summary)
or the run was interrupted; 2 for usage and configuration errors.
`

// Flags are replay's own command-line flags.
type Flags struct {
	Since, Until  time.Time // days, midnight UTC
	FilterCommand *string   // nil: the configuration's FilterCommand
	FilterType    string    // "pipe", "file", or "" for the configuration's
	Milters       []string  // --milter, in order; nil: the configuration's filter.milters
	Concurrency   int
	Format        string // "text" or "json"
	OnlyChanged   bool
	Limit         int
}

// ownFlags are replay's long flags, true for those that take a value.
var ownFlags = map[string]bool{
	"since": true, "until": true, "filter-command": true, "filter-type": true,
	"concurrency": true, "format": true, "only-changed": false, "limit": true, "milter": true,
	"help": false,
}

// MaxConcurrency bounds --concurrency.
const MaxConcurrency = 1024

// ParseArgs takes replay's own flags out of args and returns them with
// the rest, which are configuration flags for config.Load (-f, -d,
// --store-dir=... and so on). now decides what today is. It returns
// ErrHelp for -h and --help.
func ParseArgs(args []string, now time.Time) (Flags, []string, error) {
	own, rest := splitArgs(args)
	fs := pflag.NewFlagSet("replay", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	since := fs.String("since", "", "")
	until := fs.String("until", "", "")
	command := fs.String("filter-command", "", "")
	ftype := fs.String("filter-type", "", "")
	conc := fs.Int("concurrency", 2, "")
	format := fs.String("format", "text", "")
	only := fs.Bool("only-changed", false, "")
	limit := fs.Int("limit", 0, "")
	milters := fs.StringArray("milter", nil, "")
	var f Flags
	if err := fs.Parse(own); err != nil {
		return f, nil, err
	}

	f.Until = dayOf(now)
	if *until != "" {
		d, err := ParseDay(*until, now)
		if err != nil {
			return f, nil, fmt.Errorf("--until: %w", err)
		}
		f.Until = d
	}
	f.Since = f.Until.AddDate(0, 0, -1)
	if *since != "" {
		d, err := ParseDay(*since, now)
		if err != nil {
			return f, nil, fmt.Errorf("--since: %w", err)
		}
		f.Since = d
	}
	if err := CheckDays(f.Since, f.Until); err != nil {
		return f, nil, err
	}
	if fs.Changed("filter-command") {
		f.FilterCommand = command
	}
	if fs.Changed("milter") {
		f.Milters = []string{}
		for _, m := range *milters {
			if m == "" {
				continue // --milter '': no milter
			}
			if _, _, err := milter.ParseAddress(m); err != nil {
				return f, nil, fmt.Errorf("--milter: %w", err)
			}
			f.Milters = append(f.Milters, m)
		}
	}
	switch t := strings.ToLower(*ftype); t {
	case "", "pipe", "file":
		f.FilterType = t
	default:
		return f, nil, fmt.Errorf("--filter-type: must be pipe or file, not %q", *ftype)
	}
	if *conc < 1 || *conc > MaxConcurrency {
		return f, nil, fmt.Errorf("--concurrency: must be between 1 and %d", MaxConcurrency)
	}
	f.Concurrency = *conc
	switch *format {
	case "text", "json":
		f.Format = *format
	default:
		return f, nil, fmt.Errorf("--format: must be text or json, not %q", *format)
	}
	f.OnlyChanged = *only
	if *limit < 0 {
		return f, nil, fmt.Errorf("--limit: must be 0 (all) or more")
	}
	f.Limit = *limit
	return f, rest, nil
}

// splitArgs separates replay's own flags (and their values) from the
// configuration's. Only long forms are replay's, plus -h; everything else,
// and everything from "--" on, goes to the configuration.
func splitArgs(args []string) (own, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(rest, args[i:]...)
		}
		if a == "-h" {
			own = append(own, a)
			continue
		}
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, inline := strings.Cut(name, "=")
			if takesValue, mine := ownFlags[name]; mine {
				own = append(own, a)
				if takesValue && !inline && i+1 < len(args) {
					own = append(own, args[i+1])
					i++
				}
				continue
			}
		}
		rest = append(rest, a)
	}
	return own, rest
}
