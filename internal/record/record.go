// Package record reads and writes verdict records: a job and the verdict
// a worker gave it, stored as JSON beside the message (blob.RecordName).
// A worker answers a redelivered job from its record instead of running
// the filter twice; an edge whose verdict message was lost finds the
// verdict there; replay compares a new filter's verdict with it.
package record

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/sluice-mail/sluice/internal/blob"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// maxRecordSize bounds how much of a stored record is read back.
const maxRecordSize = 1 << 20

// Load reads the verdict a worker stored for job, or returns
// blob.ErrNotFound. A worker checks it before running a redelivered job;
// an edge whose verdict message was lost (a NATS reconnect) finds the
// verdict there too.
func Load(ctx context.Context, store blob.Store, job *sluicev1.FilterJob) (*sluicev1.Verdict, error) {
	key := job.GetRecordKey()
	if key == "" {
		return nil, blob.ErrNotFound
	}
	rec, err := Read(ctx, store, key)
	if err != nil {
		return nil, err
	}
	if id := rec.GetJob().GetMessageId(); id != job.GetMessageId() {
		return nil, fmt.Errorf("verdict record is for message %q", id)
	}
	return rec.Verdict, nil
}

// Read reads and decodes the verdict record at key, or returns
// blob.ErrNotFound. The record has a verdict with an action; replay reads
// the job's envelope from it too.
func Read(ctx context.Context, store blob.Store, key string) (*sluicev1.VerdictRecord, error) {
	rc, err := store.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, maxRecordSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxRecordSize {
		return nil, errors.New("verdict record too large")
	}
	var rec sluicev1.VerdictRecord
	if err := protojson.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("decode verdict record: %w", err)
	}
	if rec.Verdict == nil || rec.Verdict.Action == sluicev1.Verdict_ACTION_UNSPECIFIED {
		return nil, errors.New("verdict record without a verdict")
	}
	return &rec, nil
}

// Write stores job's record with its verdict v at the job's record key.
func Write(ctx context.Context, store blob.Store, job *sluicev1.FilterJob, v *sluicev1.Verdict) error {
	if job.GetRecordKey() == "" {
		return errors.New("job has no record key")
	}
	data, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&sluicev1.VerdictRecord{Job: job, Verdict: v})
	if err != nil {
		return err
	}
	data = append(data, '\n')
	_, err = store.Put(ctx, job.GetRecordKey(), bytes.NewReader(data), int64(len(data)))
	return err
}
