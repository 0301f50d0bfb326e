// Package bench measures what sluice costs per message: the same SMTP
// client and sink, with and without the edge (and Debian's proxsmtpd, when
// installed) between them. The benchmarks are in bench_test.go and run with
// `make bench`; this file holds what they share with the summary printed
// afterwards (cmd/benchsummary): per-message latency statistics, and the
// reader of `go test -bench` output.
package bench

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Latencies records how long each message took.
type Latencies struct {
	d []time.Duration
}

// Add records one message.
func (l *Latencies) Add(d time.Duration) { l.d = append(l.d, d) }

// Merge adds every duration of o.
func (l *Latencies) Merge(o *Latencies) { l.d = append(l.d, o.d...) }

// Len is the number of messages recorded.
func (l *Latencies) Len() int { return len(l.d) }

// Quantile is the nearest-rank q-quantile (0 < q <= 1), 0 with no data.
func (l *Latencies) Quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// Median is the 0.5-quantile.
func (l *Latencies) Median() time.Duration { return l.Quantile(0.5) }

// Metric units the benchmarks report, besides ns/op.
const (
	UnitMedian = "ms/msg-median"
	UnitP90    = "ms/msg-p90"
	UnitRate   = "msgs/s"
)

// Result is one line of `go test -bench` output.
type Result struct {
	Name    string             // without the -GOMAXPROCS suffix, e.g. "BenchmarkPerMessage/a_direct"
	Procs   int                // GOMAXPROCS, 1 when the name has no suffix
	N       int                // iterations
	Metrics map[string]float64 // unit -> value, e.g. "ns/op", UnitMedian
}

// ParseLine reads one benchmark result line; ok is false for any other line.
func ParseLine(line string) (r Result, ok bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
		return Result{}, false
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n <= 0 {
		return Result{}, false
	}
	r = Result{Name: f[0], Procs: 1, N: n, Metrics: make(map[string]float64, (len(f)-2)/2)}
	if i := strings.LastIndexByte(f[0], '-'); i > 0 {
		if p, err := strconv.Atoi(f[0][i+1:]); err == nil && p > 0 {
			r.Name, r.Procs = f[0][:i], p
		}
	}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return Result{}, false
		}
		r.Metrics[f[i+1]] = v
	}
	return r, true
}

// Parse reads every result line of r, in order.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if res, ok := ParseLine(sc.Text()); ok {
			out = append(out, res)
		}
	}
	return out, sc.Err()
}

// Spread is one metric of one benchmark over repeated runs.
type Spread struct {
	Runs             int
	Median, Min, Max float64
}

func spread(v []float64) Spread {
	if len(v) == 0 {
		return Spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Runs: len(s), Median: m, Min: s[0], Max: s[len(s)-1]}
}

func (s Spread) String() string {
	if s.Runs == 1 {
		return fmtNum(s.Median)
	}
	return fmt.Sprintf("%s (%s..%s)", fmtNum(s.Median), fmtNum(s.Min), fmtNum(s.Max))
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// standardUnits are the testing package's own metrics.
var standardUnits = map[string]bool{"ns/op": true, "B/op": true, "allocs/op": true, "MB/s": true}

func hasOwnMetrics(r Result) bool {
	for u := range r.Metrics {
		if !standardUnits[u] {
			return true
		}
	}
	return false
}

// WriteSummary prints, for every benchmark that reported UnitMedian, the
// median over runs (with min..max) of its per-message median, p90 and
// rate; for each sub-benchmark beside an "a_..." baseline the ratio of
// its median to the baseline's, run by run; and for other benchmarks with
// metrics of their own (BenchmarkSideBySide), each of those over runs.
func WriteSummary(w io.Writer, results []Result) error {
	byName := make(map[string][]Result)
	var perMsg, others []string
	for _, r := range results {
		if !hasOwnMetrics(r) {
			continue
		}
		if _, seen := byName[r.Name]; !seen {
			if _, ok := r.Metrics[UnitMedian]; ok {
				perMsg = append(perMsg, r.Name)
			} else {
				others = append(others, r.Name)
			}
		}
		byName[r.Name] = append(byName[r.Name], r)
	}
	values := func(name, unit string) []float64 {
		var v []float64
		for _, r := range byName[name] {
			if x, ok := r.Metrics[unit]; ok {
				v = append(v, x)
			}
		}
		return v
	}

	bw := bufio.NewWriter(w)
	if len(perMsg)+len(others) == 0 {
		fmt.Fprintln(bw, "no per-message results")
	}
	if len(perMsg) > 0 {
		fmt.Fprintf(bw, "%-40s %4s  %-24s %-24s %s\n", "benchmark", "runs",
			"median ms/msg (min..max)", "p90 ms/msg (min..max)", "msgs/s (min..max)")
	}
	for _, n := range perMsg {
		fmt.Fprintf(bw, "%-40s %4d  %-24s %-24s %s\n", n, len(byName[n]),
			spread(values(n, UnitMedian)), spread(values(n, UnitP90)), spread(values(n, UnitRate)))
	}

	// Ratios to the "a_" sibling, pairing the i-th run of each.
	baseline := make(map[string]string) // parent -> its a_ sub-benchmark
	for _, n := range perMsg {
		if p, sub, ok := strings.Cut(n, "/"); ok && strings.HasPrefix(sub, "a_") {
			baseline[p] = n
		}
	}
	header := false
	for _, n := range perMsg {
		p, sub, ok := strings.Cut(n, "/")
		base, hasBase := baseline[p]
		if !ok || !hasBase || n == base {
			continue
		}
		b, x := values(base, UnitMedian), values(n, UnitMedian)
		var r []float64
		for i := 0; i < len(b) && i < len(x); i++ {
			if b[i] > 0 {
				r = append(r, x[i]/b[i])
			}
		}
		if len(r) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(bw, "\nmedian ms/msg over the a_ baseline's, run by run (median (min..max)):")
			header = true
		}
		fmt.Fprintf(bw, "  %-22s %s / %s = %s\n", p, sub, strings.TrimPrefix(base, p+"/"), spread(r))
	}

	writeTargets(bw, values)

	for _, n := range others {
		fmt.Fprintf(bw, "\n%s, %d runs (median (min..max)):\n", n, len(byName[n]))
		units := make(map[string]bool)
		for _, r := range byName[n] {
			for u := range r.Metrics {
				if !standardUnits[u] {
					units[u] = true
				}
			}
		}
		for _, u := range slices.Sorted(maps.Keys(units)) {
			fmt.Fprintf(bw, "  %-24s %s\n", u, spread(values(n, u)))
		}
	}
	return bw.Flush()
}

// Target is one of the throughput and cost targets (issues 10, 11): a metric
// of one benchmark against a bound, shown beside the reference the same
// benchmark measured in the same run.
type Target struct {
	Name      string
	Bench     string // benchmark name, without -GOMAXPROCS
	Unit      string
	AtMost    bool // the metric must be at most Bound; else at least
	Bound     float64
	Reference string // a unit of the same benchmark shown beside; "" for none
}

// Targets are the rows `make bench` ends with.
var Targets = []Target{
	{"1 I/O-bound filter: msgs/s over 20 sessions / 0.2 s", "BenchmarkIOBoundFilter", "of-limit", false, 0.8, "limit-msgs/s"},
	{"2 no filter: edge CPU ms per message", "BenchmarkCost", "edge_nofilter-cpu-ms/msg", true, 0.5, "wire-msgs/s"},
	{"2 no filter: msgs/s at 20 sessions", "BenchmarkCost", "edge_nofilter-msgs/s", false, 1000, "wire-msgs/s"},
	{"3 cat: CPU per message over proxsmtpd's", "BenchmarkCost", "edge_cat-cpu-vs-proxsmtpd", true, 0.8, "proxsmtpd_cat-cpu-ms/msg"},
	{"3 cat: msgs/s over the spawn limit", "BenchmarkCost", "edge_cat-of-spawn-limit", false, 0.5, "spawn-runs/s"},
	{"4 kill -9: latest answer after it, s", "BenchmarkFailover", "after-kill-max-s", true, 10, ""},
	{"4 kill -9: p99 latency of its messages, s", "BenchmarkFailover", "affected-p99-s", true, 15, ""},
	{"5 100 MiB message: MiB over idle RSS", "BenchmarkMemory", "100MiB-hwm-over-idle-MiB", true, 64, "idle-rss-MiB"},
	{"5 2,000 idle sessions: RSS MiB", "BenchmarkMemory", "2000sessions-rss-MiB", true, 200, "idle-rss-MiB"},
	{"6 scale-out: 4 workers' msgs/s over 1's", "BenchmarkScaleOut", "4-over-1", false, 3.5, "1worker-msgs/s"},
	{"11 accept-all milter: msgs/s over cat's", "BenchmarkCost", "edge_milter-over-cat", false, 2, "edge_cat-msgs/s"},
	{"11 accept-all milter: msgs/s over no filter's", "BenchmarkCost", "edge_milter-of-nofilter", false, 0.5, "edge_nofilter-msgs/s"},
	{"12 replay, sleep 0.05; cat: 4-worker pool over local", "BenchmarkReplay", "pool-over-local", false, 3, "local-msgs/s"},
	{"12 replay of 100,000 messages: peak RSS MiB", "BenchmarkReplay", "100k-rss-MiB", true, 100, ""},
}

// writeTargets prints each target's median over runs, its bound, whether
// the median meets it, and the reference beside it.
func writeTargets(w io.Writer, values func(name, unit string) []float64) {
	fmt.Fprintf(w, "\nthroughput targets, issues 10, 11 and 12 (median (min..max) over runs):\n")
	for _, t := range Targets {
		v := values(t.Bench, t.Unit)
		if len(v) == 0 {
			fmt.Fprintf(w, "  %-46s not run (%s)\n", t.Name, t.Bench)
			continue
		}
		sp := spread(v)
		op, met := ">=", sp.Median >= t.Bound
		if t.AtMost {
			op, met = "<=", sp.Median <= t.Bound
		}
		verdict := "met"
		if !met {
			verdict = "NOT met"
		}
		ref := ""
		if t.Reference != "" {
			if r := values(t.Bench, t.Reference); len(r) > 0 {
				ref = fmt.Sprintf("  [%s %s]", t.Reference, spread(r))
			}
		}
		fmt.Fprintf(w, "  %-46s %-22s %s %s  %s%s\n", t.Name, sp, op, fmtNum(t.Bound), verdict, ref)
	}
}
