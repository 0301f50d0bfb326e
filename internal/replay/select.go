package replay

import (
	"context"
	"fmt"
	"hash/fnv"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/xid"

	"github.com/sluice-mail/sluice/internal/blob"
	sluicev1 "github.com/sluice-mail/sluice/proto/sluice/v1"
)

// Selection narrows the stored messages a run replays. Its zero value
// selects every message of the run's days.
type Selection struct {
	// After and Before bound when the edge received the message:
	// After <= received < Before. Zero means no bound.
	After, Before time.Time
	// IDs are the only messages to replay, found by the time in the id
	// (the edge names a message when it takes it), whatever the days.
	IDs []string
	// Outcomes keeps the messages whose stored verdict was one of these:
	// accept (delivered), reject (a 5xx), drop, tempfail (a 4xx: the
	// filter's own or a temporary failure).
	Outcomes []string
	// From and To keep the messages whose envelope sender, or any of
	// whose recipients, matches one of the patterns: shell globs (*, ?,
	// [...]) over the whole address, case-insensitive; "<>" is the null
	// sender.
	From, To []string
	// Sample keeps about this fraction of the messages (0 < Sample < 1),
	// always the same ones for the same fraction: a hash of the id decides.
	// 0 keeps all.
	Sample float64
}

// Outcome names a stored verdict's action can have in a Selection, with
// the words an operator may use for them.
var outcomeWords = map[string]string{
	"accept": "accept", "accepted": "accept", "delivered": "accept",
	"reject": "reject", "rejected": "reject",
	"drop": "drop", "dropped": "drop", "discarded": "drop",
	"tempfail": "tempfail", "tempfailed": "tempfail",
}

// ParseOutcome reads an outcome as --outcome takes it: accept (delivered),
// reject, drop or tempfail, in either form.
func ParseOutcome(s string) (string, error) {
	if o, ok := outcomeWords[strings.ToLower(s)]; ok {
		return o, nil
	}
	return "", fmt.Errorf("unknown outcome %q: want delivered, rejected, dropped or tempfailed", s)
}

// ParseSample reads a sample as "10%" or "0.1".
func ParseSample(s string) (float64, error) {
	v, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(v, 64)
	if err == nil && pct {
		f /= 100
	}
	if err != nil || !(f > 0 && f <= 1) {
		return 0, fmt.Errorf("invalid sample %q: want a share above 0 and at most 100%%, as 10%% or 0.1", s)
	}
	return f, nil
}

// CheckID checks that s is a message id as the edge writes them.
func CheckID(s string) error {
	if _, err := xid.FromString(s); err != nil {
		return fmt.Errorf("%q is not a message id (20 characters, as in the logs' id=)", s)
	}
	return nil
}

// String is the selection as the start-up log line shows it.
func (s Selection) String() string {
	var parts []string
	if !s.After.IsZero() {
		parts = append(parts, "after="+s.After.UTC().Format(time.RFC3339))
	}
	if !s.Before.IsZero() {
		parts = append(parts, "before="+s.Before.UTC().Format(time.RFC3339))
	}
	if len(s.IDs) > 0 {
		parts = append(parts, fmt.Sprintf("ids=%d", len(s.IDs)))
	}
	for _, o := range s.Outcomes {
		parts = append(parts, "outcome="+o)
	}
	for _, f := range s.From {
		parts = append(parts, "from="+f)
	}
	for _, t := range s.To {
		parts = append(parts, "to="+t)
	}
	if s.Sample > 0 && s.Sample < 1 {
		parts = append(parts, "sample="+strconv.FormatFloat(s.Sample*100, 'g', 4, 64)+"%")
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, " ")
}

// selector is a Selection checked and ready to apply.
type selector struct {
	after, before time.Time
	ids           []string
	outcomes      []sluicev1.Verdict_Action
	from, to      []string // lower case
	sample        uint64   // keep ids whose hash % sampleScale is below it; 0 = all
}

const sampleScale = 1_000_000

// idSlack widens the time window for the id-based check: an id's time
// (whole seconds) is taken just before the message's received time.
const idSlack = 2 * time.Second

func (s Selection) compile() (*selector, error) {
	c := &selector{after: s.After, before: s.Before}
	if !c.after.IsZero() && !c.before.IsZero() && !c.after.Before(c.before) {
		return nil, fmt.Errorf("the time range is empty: %s is not before %s",
			c.after.UTC().Format(time.RFC3339), c.before.UTC().Format(time.RFC3339))
	}
	seen := map[string]bool{}
	for _, id := range s.IDs {
		if err := CheckID(id); err != nil {
			return nil, err
		}
		if !seen[id] {
			seen[id] = true
			c.ids = append(c.ids, id)
		}
	}
	for _, o := range s.Outcomes {
		name, err := ParseOutcome(o)
		if err != nil {
			return nil, err
		}
		a := actionOf(name)
		if !slices.Contains(c.outcomes, a) {
			c.outcomes = append(c.outcomes, a)
		}
	}
	for _, list := range []struct {
		in  []string
		out *[]string
	}{{s.From, &c.from}, {s.To, &c.to}} {
		for _, p := range list.in {
			if err := checkPattern(p); err != nil {
				return nil, fmt.Errorf("invalid address pattern %q: %v", p, err)
			}
			*list.out = append(*list.out, strings.ToLower(p))
		}
	}
	if s.Sample < 0 || s.Sample > 1 {
		return nil, fmt.Errorf("invalid sample %g: want a share above 0 and at most 1", s.Sample)
	}
	if s.Sample > 0 && s.Sample < 1 {
		c.sample = max(uint64(s.Sample*sampleScale), 1)
	}
	return c, nil
}

// senderOutcome is what the sender was told, as an action: a filter's
// refusal with a 4xx reply is a temporary failure (the sender retried),
// one with a 5xx a rejection.
func senderOutcome(v *sluicev1.Verdict) sluicev1.Verdict_Action {
	a := v.GetAction()
	if a == sluicev1.Verdict_ACTION_REJECT && strings.HasPrefix(v.GetReply(), "4") {
		return sluicev1.Verdict_ACTION_TEMPFAIL
	}
	return a
}

func actionOf(name string) sluicev1.Verdict_Action {
	switch name {
	case "accept":
		return sluicev1.Verdict_ACTION_ACCEPT
	case "reject":
		return sluicev1.Verdict_ACTION_REJECT
	case "drop":
		return sluicev1.Verdict_ACTION_DROP
	}
	return sluicev1.Verdict_ACTION_TEMPFAIL
}

// listed is the check on what the listing knows of a message: its id,
// which holds the time the edge named it.
func (c *selector) listed(m entry) bool {
	if c.sample > 0 && !c.sampled(m.id) {
		return false
	}
	if c.after.IsZero() && c.before.IsZero() {
		return true
	}
	x, err := xid.FromString(m.id)
	if err != nil {
		return true // not an id of ours: the record decides
	}
	t := x.Time()
	if !c.after.IsZero() && t.Before(c.after.Add(-idSlack)) {
		return false
	}
	return c.before.IsZero() || t.Before(c.before.Add(idSlack))
}

// sampled is true for about c.sample in sampleScale ids, always the same.
func (c *selector) sampled(id string) bool {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()%sampleScale < c.sample
}

// selected is the check on the message's record.
func (c *selector) selected(rec *sluicev1.VerdictRecord) bool {
	job := rec.GetJob()
	if !c.after.IsZero() || !c.before.IsZero() {
		t := job.GetReceived().AsTime()
		if !c.after.IsZero() && t.Before(c.after) || !c.before.IsZero() && !t.Before(c.before) {
			return false
		}
	}
	if len(c.outcomes) > 0 && !slices.Contains(c.outcomes, senderOutcome(rec.GetVerdict())) {
		return false
	}
	if len(c.from) > 0 {
		from := "<>"
		if job.Sender != nil && job.GetSender() != "" {
			from = job.GetSender()
		}
		if !matchAny(c.from, from) {
			return false
		}
	}
	if len(c.to) > 0 && !slices.ContainsFunc(job.GetRecipients(), func(r string) bool { return matchAny(c.to, r) }) {
		return false
	}
	return true
}

// checkPattern checks an address pattern of Selection.From or To.
func checkPattern(p string) error {
	_, err := path.Match(strings.ToLower(p), "")
	return err
}

// matchAny matches addr, without angle brackets and in lower case,
// against the patterns.
func matchAny(patterns []string, addr string) bool {
	if addr != "<>" {
		addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	}
	addr = strings.ToLower(addr)
	for _, p := range patterns {
		if ok, _ := path.Match(p, addr); ok {
			return true
		}
	}
	return false
}

// findID finds a message by its id: under the day of the time in the id,
// or the next day for one named just before midnight.
func findID(ctx context.Context, s blob.Store, id string) (entry, error) {
	x, err := xid.FromString(id)
	if err != nil {
		return entry{id: id, missing: err.Error()}, nil
	}
	t := x.Time().UTC()
	for _, day := range []time.Time{dayOf(t), dayOf(t.Add(idSlack))} {
		dir := blob.Dir(id, day)
		m := entry{day: day, id: id, dir: dir}
		err := s.List(ctx, dir+"/", func(key string) error {
			switch path.Base(key) {
			case blob.MessageName:
				m.message = true
			case blob.RecordName:
				m.record = true
			}
			return nil
		})
		if err != nil {
			return m, fmt.Errorf("looking for %s: %w", id, err)
		}
		if m.message || m.record {
			return m, nil
		}
	}
	day := dayOf(t)
	return entry{day: day, id: id, dir: blob.Dir(id, day), missing: "no such message in the store (looked under " + dayString(day) + ")"}, nil
}
