// Command benchsummary is `make bench`'s tail: it copies `go test -bench`
// output from stdin to stdout as it arrives, then prints a summary of the
// per-message benchmarks (median over runs with the spread, and ratios to
// the direct baseline). It exits 1 when the output shows a failure or no
// benchmark ran, so that the pipe does not hide a failed `go test`.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/sluice-mail/sluice/internal/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	var results []bench.Result
	failed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		out.Flush()
		if r, ok := bench.ParseLine(line); ok {
			results = append(results, r)
		}
		if strings.HasPrefix(line, "FAIL") || strings.HasPrefix(strings.TrimSpace(line), "--- FAIL") || strings.HasPrefix(line, "panic:") {
			failed = true
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		return 1
	}
	fmt.Fprintln(out, "\n== summary")
	if err := bench.WriteSummary(out, results); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		return 1
	}
	out.Flush()
	switch {
	case failed:
		fmt.Fprintln(os.Stderr, "benchsummary: a benchmark failed (see above)")
		return 1
	case len(results) == 0:
		fmt.Fprintln(os.Stderr, "benchsummary: no benchmark results")
		return 1
	}
	return 0
}
