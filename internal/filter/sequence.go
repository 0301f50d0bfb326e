package filter

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// Sequence runs First, then Then on what First delivered: a FilterCommand
// before the milters. Anything but an accept from First is the answer;
// First's output waits in a temporary file in TempDir, so that Then
// reads a whole, streamed message.
type Sequence struct {
	First, Then Filter
	TempDir     string
}

// Run runs both, as described on Sequence.
func (s Sequence) Run(ctx context.Context, env Env, in io.Reader, out io.Writer) (Result, error) {
	start := time.Now()
	f, err := os.CreateTemp(s.TempDir, "sluice-seq.*")
	if err != nil {
		return tempFail("temporary file", fmt.Sprintf("TempDirectory: %v", err)), nil
	}
	defer os.Remove(f.Name())
	defer f.Close()
	first, err := s.First.Run(ctx, env, in, f)
	if err != nil || first.Action != Accept {
		return first, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Result{}, fmt.Errorf("read the first filter's output: %w", err)
	}
	then, err := s.Then.Run(ctx, env, f, out)
	if err == nil && then.Action == Accept && then.Unchanged {
		// Then left First's output as it was: that is what to deliver.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return Result{}, fmt.Errorf("read the first filter's output: %w", err)
		}
		n, err := io.Copy(out, f)
		if err != nil {
			return Result{}, fmt.Errorf("copy the first filter's output: %w", err)
		}
		then.Unchanged, then.OutputSize = false, n
	}
	then.Duration = time.Since(start)
	return then, err
}

// Ready is Then's readiness check (the milters'), when it has one.
func (s Sequence) Ready(ctx context.Context) error {
	if r, ok := s.Then.(interface{ Ready(context.Context) error }); ok {
		return r.Ready(ctx)
	}
	return nil
}

// String names both, for logs.
func (s Sequence) String() string {
	return fmt.Sprintf("%v, then %v", s.First, s.Then)
}
