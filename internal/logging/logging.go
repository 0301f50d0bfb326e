// Package logging builds the process logger from the configured level
// (proxsmtpd's -d) and log_format: to stderr in the foreground, to syslog
// (facility mail, as proxsmtpd) for the detached edge.
package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"log/syslog"
	"strings"
	"sync"
)

// New returns a logger writing text ("key=value", the default) or JSON
// lines to w.
func New(w io.Writer, level slog.Level, format string) *slog.Logger {
	return slog.New(handler(w, level, format, nil))
}

func handler(w io.Writer, level slog.Level, format string, replace func([]string, slog.Attr) slog.Attr) slog.Handler {
	o := &slog.HandlerOptions{Level: level, ReplaceAttr: replace}
	if format == "json" {
		return slog.NewJSONHandler(w, o)
	}
	return slog.NewTextHandler(w, o)
}

// Syslog returns a logger that sends each record to the local syslog
// daemon (/dev/log) with facility mail, the record's level as its
// severity and tag as its program name, formatted as New formats it but
// without the time, which syslog adds. The error says that no syslog
// daemon could be reached now: the logger is usable all the same, drops
// what it cannot send, and tries to connect again with the next record.
func Syslog(tag string, level slog.Level, format string) (*slog.Logger, error) {
	s := &syslogSink{tag: tag}
	var err error
	s.w, err = dialSyslog(tag)
	noTime := func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	return slog.New(&syslogHandler{sink: s, inner: handler(&s.buf, level, format, noTime)}), err
}

func dialSyslog(tag string) (*syslog.Writer, error) {
	return syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, tag)
}

// syslogSink is the connection and the one buffer every handler derived
// from the logger formats into, under mu.
type syslogSink struct {
	mu  sync.Mutex
	tag string
	w   *syslog.Writer // nil while no daemon answers
	buf bytes.Buffer
}

func (s *syslogSink) send(level slog.Level, line string) {
	if s.w == nil {
		w, err := dialSyslog(s.tag)
		if err != nil {
			return
		}
		s.w = w
	}
	switch {
	case level >= slog.LevelError:
		_ = s.w.Err(line)
	case level >= slog.LevelWarn:
		_ = s.w.Warning(line)
	case level >= slog.LevelInfo:
		_ = s.w.Info(line)
	default:
		_ = s.w.Debug(line)
	}
}

type syslogHandler struct {
	sink  *syslogSink
	inner slog.Handler // writes into sink.buf
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	s := h.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	s.send(r.Level, strings.TrimSuffix(s.buf.String(), "\n"))
	return nil
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &syslogHandler{sink: h.sink, inner: h.inner.WithAttrs(as)}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{sink: h.sink, inner: h.inner.WithGroup(name)}
}
