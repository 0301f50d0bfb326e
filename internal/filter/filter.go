// Package filter runs a proxsmtpd FilterCommand over one message and turns
// its exit status and stderr into a verdict, exactly as proxsmtpd does,
// except where sluice deliberately does better (see docs/filters.md).
package filter

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// Mode is proxsmtpd's FilterType for the modes a worker runs.
type Mode int

const (
	// Pipe feeds the message on stdin and delivers stdout.
	Pipe Mode = iota
	// File spools the message to a 0600 file named by $EMAIL, which the
	// filter may edit in place.
	File
)

// Spec is how to run the filter: one worker's configuration.
type Spec struct {
	Command   string        // FilterCommand, run as /bin/sh -c Command; "" passes mail through
	Mode      Mode          // FilterType
	Timeout   time.Duration // FilterTimeout: a total deadline for the filter's run
	TempDir   string        // TempDirectory: $TMPDIR, and where File mode spools
	KillGrace time.Duration // between SIGTERM and SIGKILL to the process group; 0 = 2s

	// MaxOutput is the largest output delivered, in bytes
	// (filter.max_output_size); a filter writing more is stopped and the
	// message refused with a 4xx. 0 = unlimited.
	MaxOutput int64

	// Environ is the part of the worker's environment the filter
	// inherits, from Inherited. nil: Inherited(os.Environ(), nil, nil),
	// computed at every run.
	Environ []string
}

// Env is the message's part of the filter environment. A nil pointer or
// an empty list means the variable is absent.
type Env struct {
	Sender     *string  // SENDER ("<>" for the null sender)
	Recipients []string // RECIPIENTS, joined with "\n"
	Client     string   // CLIENT
	Server     string   // SERVER
	Remote     *string  // REMOTE (XFORWARD ADDR)
	RemoteHelo *string  // REMOTE_HELO (XFORWARD HELO)
	TLSVersion string   // TLS_VERSION, with TLS_CIPHER: the client's TLS session; "" = none
	TLSCipher  string   // TLS_CIPHER

	// Not in a FilterCommand's environment; milters are told them.
	Helo      string // the client's HELO/EHLO argument
	MessageID string // sluice's message id (the milter macro i)
}

// Action is what the filter asked for.
type Action int

const (
	Accept   Action = iota + 1 // deliver the output
	Reject                     // refuse with Result.Reply (4xx or 5xx)
	Drop                       // answer Result.Reply (2xx), deliver nothing
	TempFail                   // the filter gave no usable answer: Result.Reply is a 4xx
)

// Result is the outcome of one run.
type Result struct {
	Action     Action
	Reply      string // SMTP reply line without CRLF, for Reject, Drop and TempFail
	Status     string // for the per-message log line: FILTERED, FILTER-ERROR, or the filter's message
	Detail     string // for operators: "exit status 1", "killed by signal 9", "timed out after 30s"
	ExitCode   int    // the shell's exit status, -1 when it did not exit normally
	OutputSize int64  // bytes written to out; what to deliver only when Action is Accept
	Duration   time.Duration
	// Envelope is the envelope to deliver to when a milter changed it;
	// nil for the client's.
	Envelope *Envelope
	// Unchanged, with Accept, says the filter wrote nothing to out: the
	// message to deliver is the input as it was (a milter chain that
	// changed nothing), which spares a copy. Callers deliver the input.
	Unchanged bool
}

// Envelope is a changed envelope: the sender ("<>" for the null sender)
// and every recipient, without brackets.
type Envelope struct {
	Sender     string
	Recipients []string
}

// Filter decides about one message: it reads the message from in, writes
// the message to deliver to out (or nothing, with Result.Unchanged), and
// says what to do with it. The
// returned error is only for failures of in or out (the store); whatever
// the filter itself does is in Result. Workers and replay run any Filter:
// proxsmtpd's FilterCommand (Command) is one kind.
type Filter interface {
	Run(ctx context.Context, env Env, in io.Reader, out io.Writer) (Result, error)
}

// Command is proxsmtpd's FilterCommand: a shell command per message.
type Command Spec

// Run runs the command: see the package's Run.
func (c Command) Run(ctx context.Context, env Env, in io.Reader, out io.Writer) (Result, error) {
	return Run(ctx, Spec(c), env, in, out)
}

// String is the command line, for logs.
func (c Command) String() string { return c.Command }

// Run runs spec over the message read from in and writes the message to
// deliver to out. The returned error is only for failures of in or out
// (the store); everything the filter itself does is in Result.
//
// In pipe mode out receives the filter's stdout as it is written, so when
// the Result is not Accept (or an error is returned) the caller must
// discard whatever reached out.
func Run(ctx context.Context, spec Spec, env Env, in io.Reader, out io.Writer) (Result, error) {
	start := time.Now()
	var (
		res Result
		err error
	)
	switch {
	case spec.Command == "":
		res, err = passThrough(in, out)
	case ctx.Err() != nil:
		res = tempFail("filter canceled", "canceled before start: "+context.Cause(ctx).Error())
	case spec.Mode == Pipe:
		res, err = runPipe(ctx, spec, env, in, out)
	case spec.Mode == File:
		res, err = runFile(ctx, spec, env, in, out)
	default:
		res = tempFail("filter misconfigured", fmt.Sprintf("unknown filter mode %d", spec.Mode))
	}
	res.Duration = time.Since(start)
	return res, err
}

// passThrough is proxsmtpd without a FilterCommand: the message goes
// through unchanged and the log line has no status (behaviour.md#reject-and-passthrough).
func passThrough(in io.Reader, out io.Writer) (Result, error) {
	src := &errReader{r: in}
	cw := &countWriter{w: out}
	_, err := io.Copy(cw, src)
	res := Result{Action: Accept, Detail: "no filter command", OutputSize: cw.n}
	if err != nil {
		return ioFailure(res, src.err, err)
	}
	return res, nil
}

// runPipe streams in through the filter's stdin and its stdout to out.
func runPipe(ctx context.Context, spec Spec, env Env, in io.Reader, out io.Writer) (Result, error) {
	vars, done, err := runEnviron(spec, env, "")
	if err != nil {
		return tempFail("cannot spool recipients", err.Error()), nil
	}
	defer done()
	o := execute(ctx, spec, vars, in, out)
	res := o.result(ctx, spec)
	res.OutputSize = o.written
	switch {
	case o.inErr != nil:
		return res, fmt.Errorf("filter: reading message: %w", o.inErr)
	case o.outErr != nil:
		return res, fmt.Errorf("filter: writing output: %w", o.outErr)
	case o.storeStalled:
		return res, fmt.Errorf("filter: gave up waiting for the message store: %w", context.Cause(ctx))
	}
	return res, nil
}

// runEnviron is the environment of one run (email: file mode's spool
// file), with the recipients file it may need; done removes that file.
func runEnviron(spec Spec, env Env, email string) (vars []string, done func(), err error) {
	rcptFile, err := recipientsFile(spec.TempDir, env.Recipients)
	if err != nil {
		return nil, nil, fmt.Errorf("writing the recipients file: %w", err)
	}
	done = func() {}
	if rcptFile != "" {
		done = func() { os.Remove(rcptFile) }
	}
	return environ(spec.inherited(), env, spec.TempDir, email, rcptFile), done, nil
}

// runFile spools in to a private file in TempDir, runs the filter with
// $EMAIL naming it, and delivers what the file holds once the filter is done.
func runFile(ctx context.Context, spec Spec, env Env, in io.Reader, out io.Writer) (Result, error) {
	// CreateTemp makes the file 0600: the message is private (behaviour.md#filtering).
	f, err := os.CreateTemp(spec.TempDir, "sluice.*")
	if err != nil {
		return tempFail("cannot spool message", "creating spool file: "+err.Error()), nil
	}
	path := f.Name()
	defer os.Remove(path)

	src := &errReader{r: in}
	_, err = io.Copy(f, src)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if src.err != nil {
			return tempFail("cannot spool message", "reading message: "+src.err.Error()),
				fmt.Errorf("filter: reading message: %w", src.err)
		}
		return tempFail("cannot spool message", "writing spool file: "+err.Error()), nil
	}

	vars, done, err := runEnviron(spec, env, path)
	if err != nil {
		return tempFail("cannot spool recipients", err.Error()), nil
	}
	defer done()
	o := execute(ctx, spec, vars, nil, nil)
	res := o.result(ctx, spec)
	if res.Action != Accept {
		return res, nil
	}

	return deliverSpool(spec, res, path, out)
}

// deliverSpool copies what path holds to out after a filter accepted
// (res): the filter may have rewritten the file, even replaced it.
func deliverSpool(spec Spec, res Result, path string, out io.Writer) (Result, error) {
	g, err := os.Open(path)
	if err != nil {
		r := tempFail("filter output unreadable", "opening spool file: "+err.Error())
		r.ExitCode = res.ExitCode
		return r, nil
	}
	defer g.Close()
	if fi, err := g.Stat(); err == nil && tooLarge(spec, fi.Size()) {
		return fileTooLarge(spec, res), nil
	}
	cw := &countWriter{w: out}
	spooled := io.Reader(g)
	if spec.MaxOutput > 0 {
		spooled = io.LimitReader(g, spec.MaxOutput+1)
	}
	_, err = io.Copy(cw, spooled)
	res.OutputSize = cw.n
	switch {
	case err == nil && tooLarge(spec, cw.n):
		// Something the filter left behind made it grow while it was copied.
		return fileTooLarge(spec, res), nil
	case err == nil:
		return res, nil
	case cw.err != nil:
		return ioFailure(res, nil, err)
	}
	r := tempFail("filter output unreadable", "reading spool file: "+err.Error())
	r.ExitCode, r.OutputSize = res.ExitCode, cw.n
	return r, nil
}

func tooLarge(spec Spec, size int64) bool { return spec.MaxOutput > 0 && size > spec.MaxOutput }

// fileTooLarge is outputTooLarge for a filter that exited (with 0).
func fileTooLarge(spec Spec, res Result) Result {
	r := outputTooLarge(spec.MaxOutput)
	r.ExitCode, r.OutputSize = res.ExitCode, res.OutputSize
	return r
}

// ioFailure is the answer when the store failed under a copy: a TempFail
// for the record, and the error the caller turns into a 4xx.
func ioFailure(res Result, inErr, err error) (Result, error) {
	r := tempFail("message store failed", err.Error())
	r.OutputSize = res.OutputSize
	if inErr != nil {
		return r, fmt.Errorf("filter: reading message: %w", inErr)
	}
	return r, fmt.Errorf("filter: writing output: %w", err)
}

// result turns an outcome into a Result: sluice's own reasons for stopping
// the filter first, then the filter's exit status and stderr.
func (o outcome) result(ctx context.Context, spec Spec) Result {
	var res Result
	switch {
	case o.startErr != nil:
		return tempFail("filter could not start", "starting /bin/sh: "+o.startErr.Error())
	case o.inErr != nil:
		res = tempFail("message store failed", "reading message: "+o.inErr.Error())
	case o.outErr != nil:
		res = tempFail("message store failed", "writing output: "+o.outErr.Error())
	case o.storeStalled:
		res = tempFail("message store failed", "gave up waiting for the message store: "+context.Cause(ctx).Error())
	case o.tooLarge:
		// Checked before the stop reasons: the loop may end before it
		// sees the copier's signal.
		res = outputTooLarge(spec.MaxOutput)
	case o.stop == stopTimeout:
		res = tempFail("filter timed out", fmt.Sprintf("timed out after %s", spec.Timeout))
	case o.stop == stopCanceled:
		res = tempFail("filter canceled", "canceled: "+context.Cause(ctx).Error())
	case o.state == nil:
		return tempFail("filter failed", fmt.Sprintf("waiting for the shell: %v", o.waitErr))
	default:
		return judge(o.state, o.stderr)
	}
	if o.state != nil {
		res.ExitCode = o.state.ExitCode()
	}
	return res
}
