package e2e

import (
	"flag"
	"os"
	"testing"

	"github.com/sluice-mail/sluice/internal/postfixtest"
)

// defaultParallel is how many tests run at once unless -parallel says
// otherwise. The tests mostly wait (for timeouts, slow filters, and each
// edge's shutdown, which lets a pending job-queue pull end), so more of
// them than the machine has cores keep it busy without making any of
// them late. Fuzzing keeps Go's default (-parallel is its worker count).
const defaultParallel = "4"

// postfix is the package's real Postfix, started by the first test that
// needs it and stopped when the tests are done. TestPostfixDifferential
// purges its queue between cases and runs before the parallel tests, so
// another test that wants a Postfix of its own starts one.
var postfix postfixtest.Shared

func TestMain(m *testing.M) {
	flag.Parse()
	set, fuzzing := false, false
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "test.parallel":
			set = true
		case "test.fuzz":
			fuzzing = f.Value.String() != ""
		}
	})
	if !set && !fuzzing {
		_ = flag.Set("test.parallel", defaultParallel)
	}
	code := m.Run()
	postfix.Stop()
	os.Exit(code)
}
