package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// tempPrefix marks files that Put is still writing; List skips them and
// CheckKey refuses keys that would collide with them.
const tempPrefix = ".sluice-tmp-"

// FS is a Store in a local directory: one file per key, the key's slashes
// being directories.
type FS struct {
	root string
}

var _ Store = (*FS)(nil)

// NewFS returns a store rooted at dir, creating dir (mode 0700) if needed.
func NewFS(dir string) (*FS, error) {
	if dir == "" {
		return nil, errors.New("blob: empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("blob: create store directory: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("blob: %s is not a directory", abs)
	}
	return &FS{root: abs}, nil
}

// Root is the store's directory.
func (s *FS) Root() string { return s.root }

// CheckKey reports whether key is a clean relative slash-separated path
// that names something inside the store: not empty, not absolute, no "",
// "." or ".." element, no backslash or NUL, no element that looks like one
// of Put's temporary files.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("blob: empty key")
	}
	if strings.ContainsAny(key, "\\\x00") {
		return fmt.Errorf("blob: key %q contains a backslash or NUL", key)
	}
	if strings.HasPrefix(key, "/") {
		return fmt.Errorf("blob: key %q is absolute", key)
	}
	for _, el := range strings.Split(key, "/") {
		switch {
		case el == "":
			return fmt.Errorf("blob: key %q has an empty element", key)
		case el == "." || el == "..":
			return fmt.Errorf("blob: key %q has a %q element", key, el)
		case strings.HasPrefix(el, tempPrefix):
			return fmt.Errorf("blob: key %q has a reserved element", key)
		}
	}
	return nil
}

func (s *FS) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put writes r to a temporary file next to the target and renames it into
// place, so readers see the whole object or none. No fsync: the sender (or
// the upstream) holds the durable copy, not the store.
func (s *FS) Put(ctx context.Context, key string, r io.Reader, size int64) (int64, error) {
	p, err := s.path(key)
	if err != nil {
		return 0, err
	}
	f, err := s.createTemp(filepath.Dir(p))
	if err != nil {
		return 0, fmt.Errorf("blob: put %s: %w", key, err)
	}
	tmp := f.Name()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("got %d bytes, expected %d", n, size)
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return n, fmt.Errorf("blob: put %s: %w", key, err)
	}
	return n, nil
}

// createTemp creates the temporary file in dir, creating dir as needed. A
// concurrent Delete may remove an emptied dir between the two steps, hence
// the retry.
func (s *FS) createTemp(dir string) (*os.File, error) {
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		var f *os.File
		f, err = os.CreateTemp(dir, tempPrefix+"*") // mode 0600
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// Get opens the object at key.
func (s *FS) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	// ENOTDIR: the path goes through a regular file ("a/b" when "a" is a
	// file), which for a store means nothing is there.
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: get %s: %w", key, err)
	}
	if fi, err := f.Stat(); err != nil || fi.IsDir() {
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("blob: get %s: %w", key, err)
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return f, nil
}

// Delete removes key, then the directories above it that became empty.
func (s *FS) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return nil // a directory is no object
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("blob: delete %s: %w", key, err)
	}
	// Best effort: Remove fails on the first directory that is not empty.
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break
		}
	}
	return nil
}

// List calls fn for every key that starts with prefix, in lexical (byte)
// order, the order S3 lists in.
func (s *FS) List(ctx context.Context, prefix string, fn func(key string) error) error {
	if strings.ContainsAny(prefix, "\\\x00") || strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("blob: bad prefix %q", prefix)
	}
	// Walk from the deepest directory the prefix names in full.
	dir := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dir = prefix[:i]
		if err := CheckKey(dir); err != nil {
			return fmt.Errorf("blob: bad prefix %q", prefix)
		}
	}
	return s.walk(ctx, dir, prefix, fn)
}

func (s *FS) walk(ctx context.Context, dir, prefix string, fn func(string) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, filepath.FromSlash(dir)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil // nothing there, or removed by a concurrent Delete
	}
	if err != nil {
		return fmt.Errorf("blob: list %s: %w", dir, err)
	}
	// Sort by the key each entry contributes, a directory counting as
	// "name/", so that "a/b.txt" comes before "a/b/c" as it does on S3.
	type item struct {
		key   string
		isDir bool
	}
	items := make([]item, 0, len(entries))
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tempPrefix) {
			continue
		}
		key := name
		if dir != "" {
			key = dir + "/" + name
		}
		switch {
		case e.IsDir():
			items = append(items, item{key + "/", true})
		case e.Type().IsRegular():
			items = append(items, item{key, false})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].key < items[j].key })
	for _, it := range items {
		if it.isDir {
			// Descend only where keys can still match the prefix.
			if !strings.HasPrefix(it.key, prefix) && !strings.HasPrefix(prefix, it.key) {
				continue
			}
			if err := s.walk(ctx, strings.TrimSuffix(it.key, "/"), prefix, fn); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(it.key, prefix) {
			continue
		}
		if err := fn(it.key); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
