// Package logging builds the process logger from the configured level
// (proxsmtpd's -d) and log_format.
package logging

import (
	"io"
	"log/slog"
)

// New returns a logger writing text ("key=value", the default) or JSON
// lines to w.
func New(w io.Writer, level slog.Level, format string) *slog.Logger {
	o := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}
