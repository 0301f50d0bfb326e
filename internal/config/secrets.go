package config

import (
	"bytes"
	"io"
	"os"
)

// minSecretToken is the shortest line of a key file taken for a key: NATS
// seeds and JWTs are far longer, the files' words and rules are not
// single tokens of that length.
const minSecretToken = 16

// maxKeyFile bounds how much of a key file Secrets reads.
const maxKeyFile = 64 << 10

// Secrets returns every credential the configuration holds, wherever it
// came from (a setting, the file, SLUICE_* or AWS_* variables): the values
// a filter's environment must never carry. The NATS nkey, credentials and
// TLS key files count by their paths, and the first two by the keys in
// them too. A file that cannot be read adds only its path: the NATS
// connection reports it.
func (c *Config) Secrets() []string {
	var out []string
	add := func(s ...string) {
		for _, v := range s {
			if v != "" {
				out = append(out, v)
			}
		}
	}
	add(c.Store.S3.AccessKey, c.Store.S3.SecretKey, c.Store.S3.SessionToken)
	add(c.NATS.Password, c.NATS.Token)
	add(c.NATS.NKeyFile, c.NATS.CredsFile, c.NATS.TLSKey)
	for _, f := range []string{c.NATS.NKeyFile, c.NATS.CredsFile} {
		if data, err := readKeyFile(f); err == nil {
			add(keyTokens(data)...)
		}
	}
	return out
}

func readKeyFile(name string) ([]byte, error) {
	if name == "" {
		return nil, os.ErrNotExist
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxKeyFile))
}

// keyTokens returns the lines of a NATS key file that are keys: an nkey
// seed file is the seed; a credentials file is the JWT and the seed
// between "-----BEGIN ...-----" rules and lines of prose. A key is a line
// of at least minSecretToken bytes, without blanks, with a letter or digit.
func keyTokens(data []byte) []string {
	var out []string
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) < minSecretToken || bytes.ContainsAny(line, " \t\v\f\r\n") || !hasAlnum(line) {
			continue
		}
		out = append(out, string(line))
	}
	return out
}

func hasAlnum(b []byte) bool {
	for _, c := range b {
		if isAlnum(c) {
			return true
		}
	}
	return false
}
