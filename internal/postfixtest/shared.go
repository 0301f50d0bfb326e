package postfixtest

import (
	"os"
	"sync"
	"testing"
	"time"
)

// Shared is one instance for a whole test package, started by the first
// test that asks for it, so that a run of other tests does not pay for
// it; TestMain calls Stop after m.Run. The zero value is ready to use.
type Shared struct {
	once sync.Once
	dir  string
	s    *Server
	err  error
	took time.Duration
}

// Get returns the package's instance, starting it on the first call. It
// skips or fails t as Unavailable says when Postfix cannot run.
func (sh *Shared) Get(t testing.TB) *Server {
	t.Helper()
	sh.once.Do(func() {
		start := time.Now()
		sh.dir, sh.err = os.MkdirTemp("", "sluice-postfix-")
		if sh.err == nil {
			sh.s, sh.err = New(sh.dir)
		}
		sh.took = time.Since(start)
		if sh.err == nil {
			t.Logf("postfixtest: Postfix on %s started in %v", sh.s.Addr(), sh.took.Round(time.Millisecond))
		}
	})
	if sh.err != nil {
		Unavailable(t, sh.err)
	}
	return sh.s
}

// Stop stops the instance, if one was started, and removes its directory.
func (sh *Shared) Stop() {
	if sh.s != nil {
		sh.s.Stop()
	}
	if sh.dir != "" {
		os.RemoveAll(sh.dir)
	}
}
