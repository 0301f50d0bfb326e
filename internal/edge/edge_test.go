package edge

import (
	"slices"
	"strings"
	"testing"

	"github.com/sluice-mail/sluice/internal/config"
	"github.com/sluice-mail/sluice/internal/monitor"
	"github.com/sluice-mail/sluice/internal/session"
)

// Issue 6, item 13: the "edge listening" line names the NATS servers
// without their passwords or tokens.
func TestNATSDescriptionHidesSecrets(t *testing.T) {
	cfg := &config.Config{NATS: config.NATS{URLs: []string{"nats://sluice:s3cret@nats1:4222", "tls://t0ken@nats2:4443"}}}
	got := natsDescription(cfg)
	if strings.Contains(got, "s3cret") || strings.Contains(got, "t0ken") {
		t.Errorf("natsDescription = %q", got)
	}
	if !strings.Contains(got, "nats1:4222") || !strings.Contains(got, "nats2:4443") {
		t.Errorf("natsDescription = %q: servers missing", got)
	}
}

// Every limit the session reports has its value of the metric's label.
func TestLimitNamesCounted(t *testing.T) {
	for _, l := range []string{session.LimitCommandDeadline, session.LimitDataDeadline, session.LimitHardErrors,
		session.LimitEarlyTalker, session.LimitRecipients, session.LimitMessageSize, session.LimitXForward,
		session.LimitTLSPipelined} {
		if !slices.Contains(monitor.Limits, l) {
			t.Errorf("%s is not in monitor.Limits", l)
		}
	}
}

// Issue 6, item 9: a recipient_limit whose envelopes cannot fit a NATS
// message stops the edge at start-up, naming the setting, rather than
// answering 451 to every big message for ever.
func TestRecipientLimitMustFitAJob(t *testing.T) {
	if err := checkJobFits(1000, 1<<20); err != nil {
		t.Errorf("the default against the default max_payload: %v", err)
	}
	err := checkJobFits(100000, 1<<20)
	if err == nil || !strings.HasPrefix(err.Error(), "recipient_limit: ") {
		t.Errorf("100000 recipients against 1 MiB: %v", err)
	}
	if err := checkJobFits(100000, 64<<20); err != nil {
		t.Errorf("100000 recipients against 64 MiB: %v", err)
	}
}

// Every outcome the session reports has its value of the metric's label.
func TestOutcomesCounted(t *testing.T) {
	for _, k := range session.Kinds() {
		if !slices.Contains(monitor.Statuses, k.String()) {
			t.Errorf("%v is not in monitor.Statuses", k)
		}
	}
	if len(session.Kinds()) != len(monitor.Statuses) {
		t.Errorf("%d outcomes, %d statuses", len(session.Kinds()), len(monitor.Statuses))
	}
}
