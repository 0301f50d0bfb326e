package config

import (
	"slices"
	"strings"
	"testing"
)

// The replay tool reads the store and runs the filter: it needs neither
// an upstream (OutAddress) nor a NATS server, unlike the edge and the
// worker, and it keeps the filter and store settings of the same file.
func TestReplayRole(t *testing.T) {
	if Replay.String() != "replay" {
		t.Errorf("Replay.String() = %q", Replay.String())
	}
	if u := Usage(Replay); !strings.HasPrefix(u, "usage: replay [-d debuglevel] [-f configfile]") {
		t.Errorf("Usage(Replay):\n%s", u)
	}

	// No file, no OutAddress, no nats.url: the edge and worker refuse this.
	if e := loadErr(t, Edge, []string{"--data-dir", t.TempDir()}, nil); e.Setting != "OutAddress" {
		t.Errorf("edge without OutAddress: %v", e)
	}
	if e := loadErr(t, Worker, nil, nil); e.Setting != "nats.url" {
		t.Errorf("worker without nats.url: %v", e)
	}
	c := mustLoad(t, Replay, nil, nil)
	if c.Role != Replay || c.ConfigFile != "" || c.Store.Type != StoreFS {
		t.Errorf("replay defaults: role %v file %q store %+v", c.Role, c.ConfigFile, c.Store)
	}

	// An edge's proxsmtpd.conf loads as-is; Listen and OutAddress are
	// ignored, the filter and store settings are kept.
	tmp := t.TempDir()
	p := writeConf(t, "proxsmtpd.conf", "Listen: 127.0.0.1:10025\nOutAddress: 127.0.0.1:2525\n"+
		"FilterCommand: /usr/bin/tag %s\nFilterType: file\nFilterTimeout: 7\nTempDirectory: "+tmp+"\n"+
		"store.s3.endpoint: 127.0.0.1:9000\nstore.s3.bucket: mail\n")
	c = mustLoad(t, Replay, []string{"-f", p}, nil)
	if c.Listen != (Address{}) || c.OutAddress != (Address{}) {
		t.Errorf("replay kept Listen %v / OutAddress %v", c.Listen, c.OutAddress)
	}
	if c.FilterCommand != "/usr/bin/tag %s" || c.FilterType != FilterTypeFile || c.FilterTimeout.Seconds() != 7 ||
		c.TempDirectory != tmp || c.Store.Type != StoreS3 || c.Store.S3.Bucket != "mail" {
		t.Errorf("replay settings: %+v", c)
	}

	// A missing TempDirectory is worth a warning: replay runs the filter.
	p = writeConf(t, "proxsmtpd.conf", "FilterCommand: cat\nTempDirectory: "+tmp+"/missing\n")
	c = mustLoad(t, Replay, []string{"-f", p, "--nats-url", "nats://127.0.0.1:4222"}, nil)
	if !slices.ContainsFunc(c.Warnings, func(w string) bool { return strings.HasPrefix(w, "TempDirectory: ") }) {
		t.Errorf("no TempDirectory warning: %q", c.Warnings)
	}
	// Configuration errors are still errors.
	p = writeConf(t, "proxsmtpd.conf", "FilterType: maybe\n")
	if e := loadErr(t, Replay, []string{"-f", p}, nil); e.Setting != "FilterType" {
		t.Errorf("bad FilterType: %v", e)
	}
}
