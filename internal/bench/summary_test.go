package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestLatencies(t *testing.T) {
	var l Latencies
	if l.Median() != 0 {
		t.Errorf("median of nothing = %v, want 0", l.Median())
	}
	// Added out of order: 1..10 ms.
	for _, ms := range []int{7, 3, 10, 1, 5, 9, 2, 8, 4, 6} {
		l.Add(time.Duration(ms) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0.1: 1, 0.5: 5, 0.9: 9, 1: 10} {
		if got := l.Quantile(q); got != want*time.Millisecond {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want*time.Millisecond)
		}
	}
	var m Latencies
	m.Add(time.Second)
	m.Merge(&l)
	if m.Len() != 11 || m.Quantile(1) != time.Second {
		t.Errorf("after Merge: %d values, max %v", m.Len(), m.Quantile(1))
	}
}

func TestParseLine(t *testing.T) {
	r, ok := ParseLine("BenchmarkPerMessage/b_edge_cat-2   \t     400\t   5123456 ns/op\t         4.812 ms/msg-median\t         6.100 ms/msg-p90\t       195.2 msgs/s")
	if !ok {
		t.Fatal("a result line was not read")
	}
	if r.Name != "BenchmarkPerMessage/b_edge_cat" || r.Procs != 2 || r.N != 400 {
		t.Errorf("got name %q procs %d n %d", r.Name, r.Procs, r.N)
	}
	for unit, want := range map[string]float64{"ns/op": 5123456, UnitMedian: 4.812, UnitP90: 6.1, UnitRate: 195.2} {
		if got := r.Metrics[unit]; got != want {
			t.Errorf("%s = %v, want %v", unit, got, want)
		}
	}
	r, ok = ParseLine("BenchmarkDataReader 	 100	 12345 ns/op	 84.9 MB/s")
	if !ok || r.Name != "BenchmarkDataReader" || r.Procs != 1 || r.Metrics["MB/s"] != 84.9 {
		t.Errorf("line without a procs suffix: %+v, %v", r, ok)
	}
	for _, line := range []string{
		"",
		"goos: linux",
		"BenchmarkPerMessage/d_proxsmtpd_cat-2",
		"--- SKIP: BenchmarkPerMessage/d_proxsmtpd_cat",
		"BenchmarkX-2 100 12 ns/op extra",
		"BenchmarkX-2 0 12 ns/op",
		"BenchmarkX-2 10 NaN ns/op",
		"ok  	github.com/sluice-mail/sluice/internal/bench	12.3s",
	} {
		if r, ok := ParseLine(line); ok {
			t.Errorf("%q read as a result: %+v", line, r)
		}
	}
}

func TestWriteSummary(t *testing.T) {
	out := `goos: linux
BenchmarkPerMessage/a_direct-2  400  150000 ns/op  0.10 ms/msg-median  0.2 ms/msg-p90  6000 msgs/s
BenchmarkPerMessage/a_direct-2  400  150000 ns/op  0.20 ms/msg-median  0.3 ms/msg-p90  5000 msgs/s
BenchmarkPerMessage/a_direct-2  400  150000 ns/op  0.40 ms/msg-median  0.5 ms/msg-p90  2500 msgs/s
BenchmarkPerMessage/b_edge_cat-2  400  5000000 ns/op  4.0 ms/msg-median  6 ms/msg-p90  200 msgs/s
BenchmarkPerMessage/b_edge_cat-2  400  5000000 ns/op  5.0 ms/msg-median  7 ms/msg-p90  190 msgs/s
BenchmarkPerMessage/b_edge_cat-2  400  5000000 ns/op  6.0 ms/msg-median  8 ms/msg-p90  150 msgs/s
BenchmarkDataReader-2  100  12345 ns/op  84.9 MB/s
BenchmarkSideBySide-2  400  9000000 ns/op  0.2 a_direct-ms/msg  5.0 b_edge_cat-ms/msg  25 b/a
BenchmarkSideBySide-2  400  9000000 ns/op  0.1 a_direct-ms/msg  4.0 b_edge_cat-ms/msg  40 b/a
PASS
`
	rs, err := Parse(strings.NewReader(out))
	if err != nil || len(rs) != 9 {
		t.Fatalf("Parse: %d results, %v", len(rs), err)
	}
	var b strings.Builder
	if err := WriteSummary(&b, rs); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	for _, want := range []string{
		"BenchmarkPerMessage/a_direct", "0.200 (0.100..0.400)",
		"BenchmarkPerMessage/b_edge_cat", "5.00 (4.00..6.00)",
		// Run by run: 40, 25, 15.
		"b_edge_cat / a_direct = 25.0 (15.0..40.0)",
		// The side-by-side metrics, median of two runs.
		"BenchmarkSideBySide, 2 runs", "b/a", "32.5 (25.0..40.0)", "b_edge_cat-ms/msg", "4.50 (4.00..5.00)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "DataReader") {
		t.Errorf("summary lists a benchmark without per-message figures:\n%s", s)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		"BenchmarkPerMessage/b_edge_cat-2   \t     400\t   5123456 ns/op\t         4.812 ms/msg-median",
		"BenchmarkDataReader 	 100	 12345 ns/op	 84.9 MB/s",
		"BenchmarkX--1 1 1 a",
		"Benchmark-2 1 1e308 x 2 y",
		"PASS",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, ok := ParseLine(line)
		if !ok {
			return
		}
		if r.N <= 0 || r.Procs <= 0 || !strings.HasPrefix(r.Name, "Benchmark") || len(r.Metrics) == 0 {
			t.Fatalf("implausible result %+v from %q", r, line)
		}
		for unit, v := range r.Metrics {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s = %v from %q", unit, v, line)
			}
		}
		var b strings.Builder
		if err := WriteSummary(&b, []Result{r, r}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWriteSummaryTargets(t *testing.T) {
	out := `BenchmarkCost-2  400  1 ns/op  1.50 edge_nofilter-cpu-ms/msg  900 edge_nofilter-msgs/s  3000 wire-msgs/s  0.45 edge_cat-cpu-vs-proxsmtpd  17 proxsmtpd_cat-cpu-ms/msg  0.9 edge_cat-of-spawn-limit  220 spawn-runs/s
BenchmarkCost-2  400  1 ns/op  1.70 edge_nofilter-cpu-ms/msg  1100 edge_nofilter-msgs/s  2800 wire-msgs/s  0.50 edge_cat-cpu-vs-proxsmtpd  16 proxsmtpd_cat-cpu-ms/msg  0.8 edge_cat-of-spawn-limit  230 spawn-runs/s
BenchmarkCost-2  400  1 ns/op  1.60 edge_nofilter-cpu-ms/msg  800 edge_nofilter-msgs/s  2900 wire-msgs/s  0.40 edge_cat-cpu-vs-proxsmtpd  18 proxsmtpd_cat-cpu-ms/msg  0.7 edge_cat-of-spawn-limit  210 spawn-runs/s
`
	rs, err := Parse(strings.NewReader(out))
	if err != nil || len(rs) != 3 {
		t.Fatalf("Parse: %d results, %v", len(rs), err)
	}
	var b strings.Builder
	if err := WriteSummary(&b, rs); err != nil {
		t.Fatal(err)
	}
	s := b.String()
	line := func(prefix string) string {
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return l
			}
		}
		t.Fatalf("no line %q in:\n%s", prefix, s)
		return ""
	}
	for prefix, want := range map[string][]string{
		"2 no filter: edge CPU":          {"1.60 (1.50..1.70)", "<= 0.500", "NOT met", "[wire-msgs/s 2900 (2800..3000)]"},
		"2 no filter: msgs/s":            {"900 (800..1100)", ">= 1000", "NOT met"},
		"3 cat: CPU per message":         {"0.450 (0.400..0.500)", "<= 0.800", " met", "[proxsmtpd_cat-cpu-ms/msg 17.0 (16.0..18.0)]"},
		"3 cat: msgs/s over the spawn":   {"0.800 (0.700..0.900)", ">= 0.500", " met"},
		"1 I/O-bound filter":             {"not run (BenchmarkIOBoundFilter)"},
		"6 scale-out: 4 workers' msgs/s": {"not run"},
	} {
		l := line(prefix)
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("%q: %q lacks %q", prefix, l, w)
			}
		}
	}
	if l := line("3 cat: CPU per message"); strings.Contains(l, "NOT met") {
		t.Errorf("%q: a target met shown as not met", l)
	}
}
