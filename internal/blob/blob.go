// Package blob stores message bodies by key: the message as received, the
// filtered message and the verdict record, side by side under a
// date-prefixed directory so that retention and replay can select by time.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"
)

// ErrNotFound is returned by Get for a key that holds nothing.
var ErrNotFound = errors.New("blob: not found")

// Store is what the edge and the workers need of an object store.
// Implementations: FS (local directory) and S3.
type Store interface {
	// Put stores everything r yields under key, replacing any object
	// there. size is the length when known, else -1. It returns the number
	// of bytes stored. The object is visible to Get only once Put returned
	// nil: a failed Put leaves no partial object behind.
	Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error)
	// Get opens the object at key for reading, or returns ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn with every key under prefix, in lexical order, until
	// fn returns an error, which List then returns.
	List(ctx context.Context, prefix string, fn func(key string) error) error
}

// Object names inside a message's directory.
const (
	MessageName  = "message.eml"
	FilteredName = "filtered.eml"
	RecordName   = "verdict.json"
)

// Dir is the directory of one message: "2006/01/02/<id>", UTC date of
// reception first so that listing by prefix selects by day.
func Dir(id string, received time.Time) string {
	return path.Join(received.UTC().Format("2006/01/02"), id)
}

// Key is the key of the object name inside the message's directory.
func Key(id string, received time.Time, name string) string {
	return path.Join(Dir(id, received), name)
}

// ReadyCheck is the readiness check of a store: its own Ready method
// when it has one (S3: the bucket answers), else for a local directory
// store that its root is still a directory.
func ReadyCheck(store Store) func(context.Context) error {
	if r, ok := store.(interface{ Ready(context.Context) error }); ok {
		return r.Ready
	}
	if fs, ok := store.(interface{ Root() string }); ok {
		root := fs.Root()
		return func(context.Context) error {
			fi, err := os.Stat(root)
			if err != nil {
				return fmt.Errorf("blob store: %w", err)
			}
			if !fi.IsDir() {
				return fmt.Errorf("blob store: %s is not a directory", root)
			}
			return nil
		}
	}
	return func(context.Context) error { return nil }
}
