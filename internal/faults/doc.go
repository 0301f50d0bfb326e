// Package faults holds sluice's fault-injection tests: the real edge and
// worker binaries as separate processes on loopback, sharing a 3-node NATS
// JetStream cluster (internal/natstest) and an S3 server (versitygw, from
// internal/s3test), between a load of concurrent SMTP sessions and a
// recording upstream (internal/smtptest). Each test breaks one part (a
// worker killed mid-filter, a NATS node killed, S3 stopped or frozen, all
// of NATS stopped, the upstream gone) and checks the failure rule of
// DESIGN.md on every message sent: a 250 means delivered exactly once; a
// 4xx, 5xx or a broken connection means not delivered; nothing is
// delivered twice. The S3 freezes also check that no reply comes later
// than its final dot + job_timeout (and a few seconds of slack).
//
// The package has no code of its own beyond this comment; everything is in
// its tests.
package faults
