package record

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/sluice-mail/sluice/internal/blob"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

func TestWriteLoad(t *testing.T) {
	store, err := blob.NewFS(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	job := &sluicev1.FilterJob{MessageId: "m1", RecordKey: "2026-12-03/m1/record.json"}
	if _, err := Load(ctx, store, job); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("Load before Write: %v, want ErrNotFound", err)
	}
	v := &sluicev1.Verdict{MessageId: "m1", Action: sluicev1.Verdict_ACTION_REJECT, Reply: "550 no", Status: "550 no"}
	if err := Write(ctx, store, job, v); err != nil {
		t.Fatal(err)
	}
	got, err := Load(ctx, store, job)
	if err != nil || got.GetAction() != v.Action || got.GetReply() != v.Reply {
		t.Fatalf("Load: %v %v", got, err)
	}
	rec, err := Read(ctx, store, job.RecordKey)
	if err != nil || rec.GetJob().GetMessageId() != "m1" {
		t.Fatalf("Read: %v %v", rec, err)
	}
	// Another message's record at this key does not count.
	other := &sluicev1.FilterJob{MessageId: "m2", RecordKey: job.RecordKey}
	if _, err := Load(ctx, store, other); err == nil {
		t.Error("Load accepted another message's record")
	}
	// A record without a verdict is no record.
	if err := Write(ctx, store, job, &sluicev1.Verdict{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ctx, store, job); err == nil {
		t.Error("Load accepted a record without an action")
	}
	if err := Write(ctx, store, &sluicev1.FilterJob{MessageId: "m3"}, v); err == nil {
		t.Error("Write without a record key succeeded")
	}
}
