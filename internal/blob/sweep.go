package blob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// dayLayout is the date prefix every message key starts with (see Dir).
const dayLayout = "2006/01/02/"

// KeyDay returns the UTC day a key's date prefix names, or false when the
// key does not start with a "YYYY/MM/DD/" prefix.
func KeyDay(key string) (time.Time, bool) {
	if len(key) <= len(dayLayout) {
		return time.Time{}, false
	}
	for i := range len(dayLayout) {
		// time.Parse would also take signs and short numbers.
		if isDigit(dayLayout[i]) != isDigit(key[i]) {
			return time.Time{}, false
		}
	}
	day, err := time.ParseInLocation(dayLayout, key[:len(dayLayout)], time.UTC)
	if err != nil {
		return time.Time{}, false
	}
	return day, true
}

// errStop ends a List early; it never leaves Sweep.
var errStop = errors.New("blob: stop listing")

// Sweep deletes every object of s whose day (its date prefix) ends at or
// before before, and returns how many it deleted. Keys without a date
// prefix are left alone. It works on any Store, so retention does not
// depend on an object store's own lifecycle rules. A failed Delete is
// logged and the sweep goes on; the first such error is returned.
func Sweep(ctx context.Context, s Store, before time.Time, log *slog.Logger) (int, error) {
	var (
		deleted  int
		firstErr error
	)
	err := s.List(ctx, "", func(key string) error {
		day, ok := KeyDay(key)
		if !ok {
			// Keys sort by date, and digits sort before letters: past the
			// dated keys, nothing more is ours to sweep.
			if key[0] > '9' {
				return errStop
			}
			return nil
		}
		if day.AddDate(0, 0, 1).After(before) {
			return errStop // this day and every later one stays
		}
		if err := s.Delete(ctx, key); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Warn("retention: delete failed", "key", key, "err", err)
			if firstErr == nil {
				firstErr = err
			}
			return nil
		}
		deleted++
		log.Debug("retention: deleted", "key", key)
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return deleted, fmt.Errorf("blob: sweep: %w", err)
	}
	if firstErr != nil {
		return deleted, fmt.Errorf("blob: sweep: %w", firstErr)
	}
	if deleted > 0 {
		log.Info("retention: swept", "deleted", deleted, "before", before.UTC().Format(time.RFC3339))
	}
	return deleted, nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
