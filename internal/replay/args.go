package replay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluice-mail/sluice/internal/milter"
)

// ErrHelp is returned by ParseArgs for -h or --help.
var ErrHelp = pflag.ErrHelp

// Usage is the replay command's own part of its usage text; the
// configuration flags it shares with edge and worker follow it.
const Usage = `usage: replay [-f configfile] [--since TIME] [--until TIME]
              [--id ID ...] [--outcome OUTCOME ...] [--from PATTERN ...]
              [--to PATTERN ...] [--sample SHARE]
              [--filter-command CMD] [--filter-type pipe|file]
              [--milter ADDRESS ...]
              [--concurrency N] [--pool NAME] [--resume FILE]
              [--format text|json] [--only-changed]
              [--html FILE] [--deliver-to HOST:PORT]
              [--limit N] [--setting=value ...]

Runs the messages sluice stored (store.*) through a filter and reports the
verdicts that would change, before that filter is switched on.

Read-only: replay never writes to the message store, and needs no NATS
server unless --pool says so. It delivers nothing unless --deliver-to says
where. The filter's output is hashed (sha256) and compared, not kept.

The filter is FilterCommand, FilterType, FilterTimeout and TempDirectory
from the configuration (-f, SLUICE_*), unless --filter-command or
--filter-type say otherwise; then the milters of filter.milters, unless
--milter names others. Each message is filtered with the environment
of its first run (SENDER, RECIPIENTS, CLIENT, ...), rebuilt from its
verdict.json. Messages without a verdict.json (still in flight, or whose
record failed) are listed as skipped.

Selection (criteria of different kinds must all match; a repeated flag
matches any of its values):
      --since TIME            first day, or instant, to replay, UTC: YYYY-MM-DD,
                              today, yesterday, or an instant as
                              2026-11-20T14:00 (UTC) or RFC 3339 with a zone
                              (default: the day before --until)
      --until TIME            last day to replay, inclusive, or an instant,
                              exclusive (default: today)
      --id ID                 only this message (as in the logs' id=); repeat
                              or separate with commas; the days then come
                              from the ids
      --outcome OUTCOME       only messages whose stored verdict was this:
                              delivered (accept), rejected, dropped, tempfailed
      --from PATTERN          only envelope senders matching this glob
                              (*@example.com; "<>" the null sender),
                              case-insensitive
      --to PATTERN            only messages with a recipient matching this glob
      --sample SHARE          about this share of the messages (10% or 0.1),
                              the same ones each time
      --limit N               report at most N messages; 0 = all (default 0)

Filter:
      --filter-command CMD    the filter to try, run as /bin/sh -c CMD
                              (default: FilterCommand; "" passes mail through)
      --filter-type TYPE      pipe or file (default: FilterType)
      --milter ADDRESS        a milter to try after the filter command,
                              inet:host:port or unix:/path; repeat for
                              several, in order (default: filter.milters;
                              --milter '' tries none)
      --concurrency N         filters running at once (default 2); with --pool,
                              jobs in flight on the pool (default 64)
      --pool NAME             run the filter on the workers that serve replay
                              pool NAME (worker.replay_pools) instead of here:
                              needs nats.url; the job carries the filter, the
                              workers read the store themselves
      --resume FILE           take over the results in FILE, the JSON report
                              (--format json) of an interrupted run of this
                              replay: those messages are not run again

Report:
      --format FORMAT         text (one line per message, then a summary) or
                              json (one object per line, then a summary object)
      --only-changed          list only changed messages and errors; the
                              summary still counts every message
      --html FILE             also write the report as one self-contained HTML
                              page: totals, changes over time, filter
                              durations, the changed messages in a table
      --deliver-to HOST:PORT  deliver the messages the new filter accepts
                              that were refused before (rejected, dropped or
                              tempfailed) to this SMTP server, as the new
                              filter leaves them, with their original
                              envelope; each delivery's reply is in the report
  -h, --help                  this text

Progress goes to stderr: a bar on a terminal, else a log line every 200
messages. Ctrl-C (or SIGTERM) stops the run: the summary of what was done
is printed, marked incomplete.

Exit status: 0 when every selected message was replayed, whatever changed;
1 when the run did not complete (interrupted, the store failed, --limit cut
it short) or some message could not be replayed or delivered (see "errors"
in the summary), or nothing was selected; 2 for usage and configuration
errors.
`

// Flags are replay's own command-line flags.
type Flags struct {
	Since, Until  time.Time // the days listed, midnight UTC
	Select        Selection // After and Before set for instants
	FilterCommand *string   // nil: the configuration's FilterCommand
	FilterType    string    // "pipe", "file", or "" for the configuration's
	Milters       []string  // --milter, in order; nil: the configuration's filter.milters
	Concurrency   int
	Format        string // "text" or "json"
	OnlyChanged   bool
	Limit         int
	HTML          string // --html: the page's path; "" for none
	DeliverTo     string // --deliver-to: host:port; "" to deliver nothing
	Pool          string // --pool: the worker pool's name; "" to run here
	Resume        string // --resume: an interrupted run's JSON report
}

// DefaultPoolConcurrency is --concurrency with --pool: the jobs in flight
// on the pool, enough to keep many workers busy.
const DefaultPoolConcurrency = 64

// ownFlags are replay's long flags, true for those that take a value.
var ownFlags = map[string]bool{
	"since": true, "until": true, "filter-command": true, "filter-type": true,
	"concurrency": true, "format": true, "only-changed": false, "limit": true, "milter": true,
	"id": true, "outcome": true, "from": true, "to": true, "sample": true, "html": true,
	"deliver-to": true, "pool": true, "resume": true, "help": false,
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
	ids := fs.StringArray("id", nil, "")
	outcomes := fs.StringArray("outcome", nil, "")
	froms := fs.StringArray("from", nil, "")
	tos := fs.StringArray("to", nil, "")
	sample := fs.String("sample", "", "")
	html := fs.String("html", "", "")
	deliver := fs.String("deliver-to", "", "")
	pool := fs.String("pool", "", "")
	resume := fs.String("resume", "", "")
	var f Flags
	if err := fs.Parse(own); err != nil {
		return f, nil, err
	}

	f.Until = dayOf(now)
	if *until != "" {
		t, day, err := ParseTime(*until, now)
		if err != nil {
			return f, nil, fmt.Errorf("--until: %w", err)
		}
		f.Until = t
		if !day {
			f.Select.Before = t
			f.Until = dayOf(t.Add(-time.Nanosecond)) // the last day with an instant before it
		}
	}
	f.Since = f.Until.AddDate(0, 0, -1)
	if *since != "" {
		t, day, err := ParseTime(*since, now)
		if err != nil {
			return f, nil, fmt.Errorf("--since: %w", err)
		}
		f.Since = dayOf(t)
		if !day {
			f.Select.After = t
		}
	}
	if !f.Select.After.IsZero() && !f.Select.Before.IsZero() && !f.Select.After.Before(f.Select.Before) {
		return f, nil, fmt.Errorf("--until %s is not after --since %s", *until, *since)
	}
	if err := CheckDays(f.Since, f.Until); err != nil {
		return f, nil, err
	}
	for _, v := range *ids {
		for id := range strings.SplitSeq(v, ",") {
			if id = strings.TrimSpace(id); id == "" {
				continue
			}
			if err := CheckID(id); err != nil {
				return f, nil, fmt.Errorf("--id: %w", err)
			}
			f.Select.IDs = append(f.Select.IDs, id)
		}
	}
	if fs.Changed("id") && len(f.Select.IDs) == 0 {
		return f, nil, errors.New("--id: no message id given")
	}
	for _, v := range *outcomes {
		for o := range strings.SplitSeq(v, ",") {
			name, err := ParseOutcome(strings.TrimSpace(o))
			if err != nil {
				return f, nil, fmt.Errorf("--outcome: %w", err)
			}
			f.Select.Outcomes = append(f.Select.Outcomes, name)
		}
	}
	for _, fl := range []struct {
		name     string
		patterns []string
	}{{"--from", *froms}, {"--to", *tos}} {
		for _, p := range fl.patterns {
			if p == "" || checkPattern(p) != nil {
				return f, nil, fmt.Errorf("%s: invalid pattern %q", fl.name, p)
			}
		}
	}
	f.Select.From, f.Select.To = *froms, *tos
	if fs.Changed("sample") {
		v, err := ParseSample(*sample)
		if err != nil {
			return f, nil, fmt.Errorf("--sample: %w", err)
		}
		f.Select.Sample = v
	}
	if fs.Changed("html") && *html == "" {
		return f, nil, errors.New("--html: give the file to write")
	}
	f.HTML = *html
	if fs.Changed("deliver-to") {
		if _, port, err := net.SplitHostPort(*deliver); err != nil || port == "" {
			return f, nil, fmt.Errorf("--deliver-to: want HOST:PORT, not %q", *deliver)
		}
		f.DeliverTo = *deliver
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
	if fs.Changed("pool") {
		if !validPoolName(*pool) {
			return f, nil, fmt.Errorf("--pool: invalid pool name %q: letters, digits, '-' and '_'", *pool)
		}
		f.Pool = *pool
		if !fs.Changed("concurrency") {
			f.Concurrency = DefaultPoolConcurrency
		}
	}
	if fs.Changed("resume") && *resume == "" {
		return f, nil, errors.New("--resume: give the JSON report of the interrupted run")
	}
	f.Resume = *resume
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

// validPoolName is whether s can name a replay pool: one token of a NATS
// subject and part of a consumer's name.
func validPoolName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
