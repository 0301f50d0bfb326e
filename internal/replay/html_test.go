package replay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Hostile texts for the report: what a sender can put in a subject, an
// address or (through the filter) a reply.
const (
	hostileScript = `</script><script>alert(1)</script>`
	hostileImg    = `<img src=x onerror=alert(1)>`
	hostileFrom   = `"<script>alert(2)</script>"@evil.example`
	hostileReply  = `550 5.7.1 <b onmouseover=alert(3)>no</b> & "quoted" </style>`
)

var htmlDay = time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)

func strp(s string) *string { return &s }

// htmlFixture is a realistic run: 600 messages over two days, most the
// same, every 13th changed (the kinds in turn), some skipped, some errors
// (with and without a record), with filter durations, hostile texts in
// the first changed messages and an "Invoice" subject in some.
func htmlFixture() []Result {
	senders := []string{"alice@example.com", "Bob.Smith@example.org", "<>", "carol@example.net",
		"dave@mail.example.com", "erin@example.com", "frank@example.org", "grace@example.net", hostileFrom}
	var out []Result
	changed := 0
	for i := range 600 {
		at := htmlDay.Add(time.Duration(i) * 288 * time.Second) // 48 h / 600
		from := senders[(i*7)%len(senders)]
		r := Result{
			Type: "message", Day: at.Format(DayLayout), ID: fmt.Sprintf("d4kq%04dmsg", i),
			From: strp(from), To: 1 + i%3, FirstTo: fmt.Sprintf("user%d@dest.example", i%17),
			Received: at.Format(time.RFC3339),
			Old:      &Outcome{Action: "accept"}, New: &Outcome{Action: "accept"},
			Status: StatusSame, Content: ContentSame,
			OldMS: 20 + float64(i%50)*1.5, NewMS: 25 + float64(i%70)*2.1,
		}
		switch {
		case i%97 == 3 && i%2 == 1: // the record itself failed
			r = Result{Type: "message", Day: r.Day, ID: r.ID, Status: StatusError,
				Reason: "verdict.json: unexpected end of JSON input"}
		case i%97 == 3:
			r.New, r.Content, r.NewMS = nil, "", 0
			r.Status, r.Reason = StatusError, "store: read body: connection reset by peer"
		case i%41 == 5:
			r = Result{Type: "message", Day: r.Day, ID: r.ID, Status: StatusSkipped, Reason: "no verdict.json"}
		case i%13 == 0:
			r.Status, r.Content = StatusChanged, ""
			r.Subject = fmt.Sprintf("Newsletter %d – Grüße", i)
			if i%3 == 0 {
				r.Subject = fmt.Sprintf("Invoice %d overdue", i)
			}
			switch changed % 5 {
			case 0:
				r.Change, r.New = ChangeAcceptReject, &Outcome{Action: "reject", Reply: "550 5.7.1 spam score 9.1"}
			case 1:
				r.Old = &Outcome{Action: "reject", Reply: "550 5.7.1 spam score 7.2"}
				r.Change = ChangeRejectAccept
			case 2:
				r.Change, r.New = ChangeAction, &Outcome{Action: "tempfail", Reply: "451 4.3.0 try later"}
				r.Detail = "exit status 75"
			case 3:
				r.Old = &Outcome{Action: "reject", Reply: "550 5.7.1 old reason"}
				r.New = &Outcome{Action: "reject", Reply: hostileReply}
				r.Change = ChangeReply
			case 4:
				r.Change, r.Content = ChangeContent, ContentChanged
			}
			switch changed {
			case 0:
				r.Subject = hostileScript
			case 1:
				r.Subject = hostileImg
			}
			changed++
		}
		out = append(out, r)
	}
	return out
}

func htmlSummary(results []Result) Summary {
	s := Summary{Type: "summary"}
	for _, r := range results {
		s.add(r)
	}
	s.Listed = s.Messages + 7
	return s
}

func writeHTML(t *testing.T, h *HTML, s Summary) string {
	t.Helper()
	var b bytes.Buffer
	if err := h.Write(&b, s); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestHTMLBuckets(t *testing.T) {
	h := NewHTML(HTMLMeta{})
	add := func(received string, st Status, ch Change) {
		h.Add(Result{Received: received, Status: st, Change: ch, Old: &Outcome{Action: "accept"}})
	}
	add("2026-11-20T10:00:01Z", StatusSame, "")
	add("2026-11-20T10:00:59Z", StatusSame, "")
	add("2026-11-20T10:00:30.5Z", StatusChanged, ChangeContent)
	add("2026-11-20T10:05:00Z", StatusChanged, ChangeAcceptReject)
	add("2026-11-20T10:05:10Z", StatusError, "")
	add("2026-11-20T12:00:00Z", StatusChanged, ChangeReply)
	add("", StatusSkipped, "")
	add("not a time", StatusError, "")

	step, bs := h.chartBuckets()
	if step != time.Minute || len(bs) != 121 {
		t.Fatalf("step %v, %d buckets; want 1m, 121 (10:00 to 12:00)", step, len(bs))
	}
	if h.undated != 2 {
		t.Errorf("undated = %d, want 2", h.undated)
	}
	want := map[int]htmlCounts{
		0:   {Messages: 3, Changes: [5]int{0, 0, 0, 0, 1}},
		5:   {Messages: 2, Errors: 1, Changes: [5]int{1, 0, 0, 0, 0}},
		120: {Messages: 1, Changes: [5]int{0, 0, 0, 1, 0}},
	}
	for i, b := range bs {
		if b.Start != time.Date(2026, 11, 20, 10, i, 0, 0, time.UTC) {
			t.Fatalf("bucket %d starts %v", i, b.Start)
		}
		if b.htmlCounts != want[i] {
			t.Errorf("bucket %d = %+v, want %+v", i, b.htmlCounts, want[i])
		}
	}

	// Two days of messages: 15-minute bars, 192 of them.
	h = NewHTML(HTMLMeta{})
	for _, r := range htmlFixture() {
		h.Add(r)
	}
	step, bs = h.chartBuckets()
	if step != 15*time.Minute || len(bs) != 192 {
		t.Errorf("two days: step %v, %d buckets; want 15m, 192", step, len(bs))
	}
	var total htmlCounts
	for _, b := range bs {
		total.add(&b.htmlCounts)
	}
	s := htmlSummary(htmlFixture())
	if total.Messages+h.undated != s.Messages || total.changed() != s.Changed {
		t.Errorf("two days: %d messages + %d undated, %d changed; summary %d, %d",
			total.Messages, h.undated, total.changed(), s.Messages, s.Changed)
	}
	if kinds := total.Changes; kinds != [5]int{s.AcceptToReject, s.RejectToAccept, s.ActionChanged, s.ReplyChanged, s.ContentChanged} {
		t.Errorf("two days: changes by kind %v, summary %+v", kinds, s)
	}
}

// TestHTMLBucketsCoarsen: a long run's minutes are merged into hours, so
// the counts stay bounded and add up.
func TestHTMLBucketsCoarsen(t *testing.T) {
	h := NewHTML(HTMLMeta{})
	const n = 30000 // minutes, about 21 days
	for i := range n {
		h.Add(Result{Received: htmlDay.Add(time.Duration(i) * time.Minute).Format(time.RFC3339), Status: StatusSame})
	}
	if h.base != 3600 || len(h.counts) > htmlMaxCounts {
		t.Fatalf("base %d s, %d buckets kept", h.base, len(h.counts))
	}
	step, bs := h.chartBuckets()
	if step != 3*time.Hour || len(bs) > htmlChartBuckets {
		t.Errorf("step %v, %d buckets; want 3h, at most %d", step, len(bs), htmlChartBuckets)
	}
	sum := 0
	for _, b := range bs {
		sum += b.Messages
	}
	if sum != n {
		t.Errorf("%d messages in the chart, want %d", sum, n)
	}
}

func TestHTMLPercentiles(t *testing.T) {
	var v []float32
	for i := 100; i >= 1; i-- { // out of order on purpose
		v = append(v, float32(i))
	}
	d := durations(v)
	if d.N != 100 || d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Max != 100 {
		t.Errorf("1..100: %+v", d)
	}
	if d := durations([]float32{7.25}); d.P50 != 7.25 || d.P99 != 7.25 || d.Max != 7.25 || d.P50Text != "7.25" {
		t.Errorf("one value: %+v", d)
	}
	if d := durations([]float32{1, 2, 3, 1000}); d.P50 != 2 || d.P90 != 1000 || d.MaxText != "1000" {
		t.Errorf("1, 2, 3, 1000: %+v", d)
	}
	if d := durations(nil); d.N != 0 || d.P50Text != "–" {
		t.Errorf("none: %+v", d)
	}
	for ms, want := range map[float64]string{0.0123: "0.012", 3.14159: "3.14", 42.42: "42.4", 1234.5: "1234"} {
		if got := formatMS(ms); got != want {
			t.Errorf("formatMS(%v) = %q, want %q", ms, got, want)
		}
	}

	// Through Add and the page: unknown (0) durations are left out.
	h := NewHTML(HTMLMeta{})
	for i := 1; i <= 200; i++ {
		h.Add(Result{Status: StatusSame, NewMS: float64(i) / 2, OldMS: float64(i % 2 * 10)})
	}
	page := writeHTML(t, h, Summary{Messages: 200, Same: 200, Complete: true})
	for id, want := range map[string]string{
		"n-new": "200", "p50-new": "50.0", "p90-new": "90.0", "p99-new": "99.0", "max-new": "100",
		"n-old": "100", "p50-old": "10.0", "max-old": "10.0",
	} {
		if got := testidText(t, page, id); got != want {
			t.Errorf("%s = %q, want %q", id, got, want)
		}
	}
}

// TestHTMLRetention: only changed and error messages are kept whole, and
// no more of them than MaxRows.
func TestHTMLRetention(t *testing.T) {
	results := htmlFixture()
	s := htmlSummary(results)
	h := NewHTML(HTMLMeta{})
	for _, r := range results {
		h.Add(r)
	}
	if len(h.rows) != s.Changed+s.Errors || h.dropped != 0 {
		t.Fatalf("%d rows kept (%d dropped), want %d changed + %d errors", len(h.rows), h.dropped, s.Changed, s.Errors)
	}
	for _, row := range h.rows {
		if row.Kind == "" {
			t.Errorf("row %s has no kind", row.ID)
		}
	}
	var nOld, nNew int
	for _, r := range results {
		nOld += min(int(r.OldMS), 1)
		nNew += min(int(r.NewMS), 1)
	}
	if len(h.oldMS) != nOld || len(h.newMS) != nNew {
		t.Errorf("durations: %d old, %d new kept; want %d, %d", len(h.oldMS), len(h.newMS), nOld, nNew)
	}

	h = NewHTML(HTMLMeta{MaxRows: 3})
	for _, r := range results {
		h.Add(r)
	}
	if len(h.rows) != 3 || h.dropped != s.Changed+s.Errors-3 {
		t.Errorf("MaxRows 3: %d rows kept, %d dropped", len(h.rows), h.dropped)
	}
	page := writeHTML(t, h, s)
	if !strings.Contains(page, `data-testid="rows-dropped"`) || testidText(t, page, "rows-total") != "3" {
		t.Errorf("MaxRows 3: the page does not say rows were left out")
	}

	long := strings.Repeat("ü", 5000)
	h = NewHTML(HTMLMeta{})
	h.Add(Result{Status: StatusChanged, Change: ChangeReply, Subject: long, Old: &Outcome{Action: "reject", Reply: long}, New: &Outcome{Action: "reject"}})
	if r := h.rows[0]; len([]rune(r.Subject)) != htmlMaxText+1 || len([]rune(r.OldReply)) != htmlMaxText+1 {
		t.Errorf("long texts kept as %d and %d runes", len([]rune(r.Subject)), len([]rune(r.OldReply)))
	}
}

var scriptRE = regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script>`)

// TestHTMLEscapes: the mail's texts cannot become markup or script, the
// page fetches nothing, and its CSP allows exactly its own script and
// style.
func TestHTMLEscapes(t *testing.T) {
	results := htmlFixture()
	h := NewHTML(HTMLMeta{Title: "replay <script>alert(4)</script>", Filter: `/usr/bin/filter --x='</script>'`,
		Selection: "from=<img src=x>", Since: htmlDay, Until: htmlDay.AddDate(0, 0, 1)})
	for _, r := range results {
		h.Add(r)
	}
	s := htmlSummary(results)
	s.Stopped = "store: <script>alert(5)</script>"
	page := writeHTML(t, h, s)

	for _, bad := range []string{hostileScript, hostileImg, "<img", "<b ", "alert(1)</script>", "<script>alert",
		"http:", "https:", "url(", "@import"} {
		if strings.Contains(strings.ToLower(page), strings.ToLower(bad)) {
			t.Errorf("the page has %q", bad)
		}
	}
	if m := regexp.MustCompile(`(?i)<[a-z][^>]*\s(src|href|on[a-z]+)=`).FindString(page); m != "" {
		t.Errorf("the page has a tag with a source or a handler: %q", m)
	}
	scripts := scriptRE.FindAllStringSubmatch(page, -1)
	if n := strings.Count(strings.ToLower(page), "<script"); n != 2 || len(scripts) != 2 {
		t.Fatalf("%d <script tags (%d whole), want 2: the data and the code", n, len(scripts))
	}
	if !strings.Contains(scripts[0][0], `type="application/json"`) || scripts[1][1] != htmlScript {
		t.Errorf("the scripts are not the data and the code")
	}
	if !strings.Contains(page, `\u003c/script\u003e\u003cscript\u003ealert(1)\u003c/script\u003e`) {
		t.Errorf("the hostile subject is not in the data, escaped")
	}
	var data struct {
		Rows []htmlRow `json:"rows"`
	}
	if err := json.Unmarshal([]byte(scripts[0][1]), &data); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range data.Rows {
		got[r.Subject], got[r.From], got[r.NewReply] = true, true, true
	}
	for _, want := range []string{hostileScript, hostileImg, hostileFrom, hostileReply} {
		if !got[want] {
			t.Errorf("the data lost %q", want)
		}
	}
	if len(data.Rows) != s.Changed+s.Errors {
		t.Errorf("%d rows in the data, want %d", len(data.Rows), s.Changed+s.Errors)
	}

	csp := regexp.MustCompile(`<meta http-equiv="Content-Security-Policy" content="([^"]*)">`).FindStringSubmatch(page)
	if csp == nil {
		t.Fatal("no CSP")
	}
	policy := html.UnescapeString(csp[1])
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(page)
	for _, want := range []string{"default-src 'none'", "script-src " + cspHash(scripts[1][1]), "style-src " + cspHash(style[1])} {
		if !strings.Contains(policy, want) {
			t.Errorf("CSP %q lacks %q", policy, want)
		}
	}
	if strings.Contains(policy, "unsafe") {
		t.Errorf("CSP %q allows unsafe-something", policy)
	}
	for _, want := range []string{"replay &lt;script&gt;alert(4)&lt;/script&gt;", "from=&lt;img src=x&gt;", "&lt;script&gt;alert(5)&lt;/script&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestHTMLIncomplete(t *testing.T) {
	h := NewHTML(HTMLMeta{})
	s := Summary{Messages: 3, Same: 3, Listed: 10, Stopped: "interrupted"}
	page := writeHTML(t, h, s)
	if !strings.Contains(page, `data-testid="incomplete"`) || testidText(t, page, "stopped") != "interrupted" {
		t.Errorf("an incomplete run has no banner")
	}
	if !strings.Contains(page, `data-testid="chart-empty"`) || testidText(t, page, "rows-total") != "0" {
		t.Errorf("an empty run's page lacks its empty chart or table")
	}
	s.Complete, s.Stopped = true, ""
	if page := writeHTML(t, h, s); strings.Contains(page, `data-testid="incomplete"`) {
		t.Errorf("a complete run has the incomplete banner")
	}
	for key, want := range map[string]string{"messages": "3", "same": "3", "listed": "10", "changed": "0"} {
		if got := testidText(t, page, "sum-"+key); got != want {
			t.Errorf("sum-%s = %q, want %q", key, got, want)
		}
	}
}

// TestHTMLSummaryCards: every count of the summary has its card, under
// its JSON name, so a new count cannot be left off the page unnoticed.
func TestHTMLSummaryCards(t *testing.T) {
	results := htmlFixture()
	s := htmlSummary(results)
	h := NewHTML(HTMLMeta{})
	for _, r := range results {
		h.Add(r)
	}
	page := writeHTML(t, h, s)
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for key, v := range m {
		if n, ok := v.(float64); ok {
			if got := testidText(t, page, "sum-"+key); got != fmt.Sprint(n) {
				t.Errorf("sum-%s = %q, want %v", key, got, n)
			}
		}
	}
}

// testidText is the text of the page's element with that data-testid,
// when it has no markup inside.
func testidText(t *testing.T, page, id string) string {
	t.Helper()
	m := regexp.MustCompile(`data-testid="` + regexp.QuoteMeta(id) + `"[^>]*>([^<]*)<`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no element with data-testid %q", id)
	}
	return m[1]
}
