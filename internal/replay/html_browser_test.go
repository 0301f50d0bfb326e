package replay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// chromium finds Debian's headless-capable browser. Without it the test
// is skipped, or fails under SLUICE_REQUIRE_TOOLS=1 (as CI sets).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found (apt-get install chromium, or deploy/local/test-deps.sh)"
	if os.Getenv("SLUICE_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s, and SLUICE_REQUIRE_TOOLS=1", msg)
	}
	t.Skipf("%s; set SLUICE_REQUIRE_TOOLS=1 to fail instead", msg)
	return ""
}

// browserEvents is what the page did that it should not: dialogs (an
// injected alert), requests other than the page itself, script errors
// and console errors (a CSP violation among them).
type browserEvents struct {
	mu       sync.Mutex
	dialogs  []string
	requests []string
	errors   []string
}

func (b *browserEvents) listen(ctx *context.Context) func(ev any) {
	return func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			b.dialogs = append(b.dialogs, string(ev.Type)+": "+ev.Message)
			go chromedp.Call(*ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, "exception: "+ev.ExceptionDetails.Text+" "+exceptionDescription(ev))
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				b.errors = append(b.errors, fmt.Sprintf("log %s %s: %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text))
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				b.errors = append(b.errors, "console."+string(ev.Type))
			}
		}
	}
}

func exceptionDescription(ev *runtime.EventExceptionThrown) string {
	if ev.ExceptionDetails.Exception != nil {
		return ev.ExceptionDetails.Exception.Description
	}
	return ""
}

// TestHTMLBrowser opens a report in headless Chromium and reads it as an
// operator would: the numbers shown against the JSON report's, the table
// sorted and filtered, the hostile texts shown as text, and nothing
// fetched. The full-page screenshot is kept in $SLUICE_TEST_ARTIFACTS
// (replay-report.png) when that is set.
func TestHTMLBrowser(t *testing.T) {
	bin := chromium(t)
	started := time.Now()

	// One run, reported both ways.
	results := htmlFixture()
	var jsonOut bytes.Buffer
	printer := &Printer{W: &jsonOut, JSON: true}
	h := NewHTML(HTMLMeta{
		Title: "Replay of 2026-11-20 to 2026-11-21", Filter: "/usr/local/bin/newfilter --strict",
		Since: htmlDay, Until: htmlDay.AddDate(0, 0, 1),
		Started: htmlDay.AddDate(0, 0, 3), Finished: htmlDay.AddDate(0, 0, 3).Add(83 * time.Second),
	})
	sum := Summary{Type: "summary"}
	for _, r := range results {
		sum.add(r)
		h.Add(r)
		if err := printer.Result(r); err != nil {
			t.Fatal(err)
		}
	}
	sum.Listed, sum.Stopped = sum.Messages+7, "interrupted"
	if err := printer.Summary(sum); err != nil {
		t.Fatal(err)
	}
	var jsonSum map[string]any
	var wantRows []Result // the changed and error messages, in the JSON report
	for line := range strings.Lines(jsonOut.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("JSON report: %v: %s", err, line)
		}
		if m["type"] == "summary" {
			jsonSum = m
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Status == StatusChanged || r.Status == StatusError {
			wantRows = append(wantRows, r)
		}
	}
	if jsonSum == nil {
		t.Fatal("no summary in the JSON report")
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "replay-report.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Write(f, sum); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	pageURL := (&url.URL{Scheme: "file", Path: path}).String()

	// The browser, bounded as a whole.
	base, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.WindowSize(1280, 900), chromedp.UserDataDir(filepath.Join(dir, "profile")))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(base, opts...)
	defer cancelAlloc()
	var events browserEvents
	var ctx context.Context
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithListener(events.listen(&ctx)))
	defer cancelCtx()

	if err := chromedp.Do(ctx, chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.CSS("[data-testid=rows] tr"))); err != nil {
		t.Fatalf("loading %s: %v", pageURL, err)
	}
	run := func(what string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(testid string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(fmt.Sprintf("[data-testid=%q]", testid))))
		if err != nil {
			t.Fatalf("reading %s: %v", testid, err)
		}
		return strings.TrimSpace(s)
	}
	number := func(testid string) int {
		t.Helper()
		n, err := strconv.Atoi(text(testid))
		if err != nil {
			t.Fatalf("%s: %v", testid, err)
		}
		return n
	}
	// table is the cells' text of the rows drawn.
	table := func() [][]string {
		t.Helper()
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
			`Array.from(document.querySelectorAll("[data-testid=rows] tr:not(.empty)"), tr => Array.from(tr.cells, td => td.textContent))`))
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	column := func(rows [][]string, col int) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r[col])
		}
		return out
	}

	// Every number of the JSON summary, on the page.
	for key, v := range jsonSum {
		switch v := v.(type) {
		case float64:
			if got := number("sum-" + key); got != int(v) {
				t.Errorf("sum-%s shows %d, the JSON report %v", key, got, v)
			}
		case bool: // complete
			banner, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("[data-testid=incomplete]") !== null`))
			if err != nil {
				t.Fatal(err)
			}
			if banner == v {
				t.Errorf("complete %v, and the incomplete banner shown: %v", v, banner)
			}
		}
	}
	if got := text("stopped"); got != jsonSum["stopped"] {
		t.Errorf("stopped shows %q, the JSON report %q", got, jsonSum["stopped"])
	}
	// The chart holds every dated message; the durations are the runs'.
	var dated int
	var newMS, oldMS []float32
	for _, r := range results {
		if r.Received != "" {
			dated++
		}
		if r.NewMS > 0 {
			newMS = append(newMS, float32(r.NewMS))
		}
		if r.OldMS > 0 {
			oldMS = append(oldMS, float32(r.OldMS))
		}
	}
	buckets, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](
		`Array.from(document.querySelectorAll("[data-testid=bucket]"), g => Number(g.dataset.messages))`))
	if err != nil {
		t.Fatal(err)
	}
	bucketSum := 0
	for _, n := range buckets {
		bucketSum += n
	}
	if bucketSum != dated || number("chart-messages") != dated || number("chart-messages")+number("undated") != int(jsonSum["messages"].(float64)) {
		t.Errorf("chart: %d bars with %d messages, %d shown, %d undated; %d dated of %v", len(buckets), bucketSum,
			number("chart-messages"), number("undated"), dated, jsonSum["messages"])
	}
	if number("chart-changed") != int(jsonSum["changed"].(float64)) {
		t.Errorf("chart-changed %d, the JSON report %v", number("chart-changed"), jsonSum["changed"])
	}
	for side, ms := range map[string][]float32{"new": newMS, "old": oldMS} {
		d := durations(ms)
		want := map[string]string{"n": strconv.Itoa(d.N), "p50": formatMS(d.P50), "p90": formatMS(d.P90), "p99": formatMS(d.P99), "max": formatMS(d.Max)}
		for k, w := range want {
			if got := text(k + "-" + side); got != w {
				t.Errorf("%s-%s shows %s, want %s", k, side, got, w)
			}
		}
		if d.N == 0 || d.P50 > d.P90 || d.P90 > d.P99 || d.P99 > d.Max {
			t.Errorf("%s durations: %+v", side, d)
		}
	}

	// The table: exactly the changed and error messages.
	rows := table()
	total := len(wantRows)
	if len(rows) != total || number("rows-shown") != total || number("rows-total") != total {
		t.Fatalf("%d rows drawn, %s of %s shown; want %d", len(rows), text("rows-shown"), text("rows-total"), total)
	}
	var wantIDs, gotIDs []string
	for _, r := range wantRows {
		wantIDs = append(wantIDs, r.Day+" "+r.ID)
	}
	gotIDs, err = chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("[data-testid=rows] tr"), tr => tr.title)`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("rows %v, want %v", gotIDs, wantIDs)
	}
	errorRows := 0
	for _, r := range rows {
		if r[6] == "error" {
			errorRows++
		}
	}
	if errorRows != int(jsonSum["errors"].(float64)) {
		t.Errorf("%d error rows, the JSON report %v errors", errorRows, jsonSum["errors"])
	}

	// Sorting: a click sorts by sender, a second click the other way.
	firstBefore := rows[0][1]
	run("sort by sender", chromedp.Click(chromedp.CSS("[data-testid=sort-sender]")))
	asc := column(table(), 1)
	lower := func(a, b string) int { return strings.Compare(strings.ToLower(a), strings.ToLower(b)) }
	if !slices.IsSortedFunc(asc, lower) || len(asc) != total {
		t.Errorf("after a click on sender, the senders are %q", asc)
	}
	if asc[0] == firstBefore {
		t.Errorf("sorting left the first sender %q first", firstBefore)
	}
	run("sort by sender, descending", chromedp.Click(chromedp.CSS("[data-testid=sort-sender]")))
	desc := column(table(), 1)
	if !slices.IsSortedFunc(desc, func(a, b string) int { return lower(b, a) }) || desc[0] != asc[len(asc)-1] {
		t.Errorf("after a second click, the senders are %q", desc)
	}
	if sort, _ := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.querySelector("[data-testid=sort-sender]").parentElement.getAttribute("aria-sort")`)); sort != "descending" {
		t.Errorf("the sender header's aria-sort is %q", sort)
	}
	run("sort by time", chromedp.Click(chromedp.CSS("[data-testid=sort-time]")))
	times := column(table(), 0)
	if !slices.IsSorted(times) {
		t.Errorf("sorted by time: %q", times)
	}

	// Typing in the filter box narrows the rows to those with the text.
	wantInvoice := 0
	for _, r := range wantRows {
		if strings.Contains(strings.ToLower(r.Subject), "invoice") {
			wantInvoice++
		}
	}
	run("type a filter", chromedp.SendKeys(chromedp.CSS("[data-testid=text-filter]"), "INVOICE"))
	rows = table()
	if len(rows) != wantInvoice || number("rows-shown") != wantInvoice || number("rows-total") != total || wantInvoice == 0 {
		t.Errorf("filter INVOICE: %d rows, %s of %s; want %d of %d", len(rows), text("rows-shown"), text("rows-total"), wantInvoice, total)
	}
	for _, r := range rows {
		if !strings.Contains(r[3], "Invoice") {
			t.Errorf("filter INVOICE shows %q", r)
		}
	}
	clear := `(() => { const q = document.querySelector("[data-testid=text-filter]"); q.value = ""; q.dispatchEvent(new Event("input")); })()`
	run("clear the filter", chromedp.Evaluate[chromedp.Void](clear))
	if number("rows-shown") != total {
		t.Errorf("cleared filter: %d rows shown", number("rows-shown"))
	}

	// The kind select.
	selectKind := func(kind string) [][]string {
		t.Helper()
		run("select "+kind, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`(() => { const s = document.querySelector("[data-testid=kind-filter]"); s.value = %q; s.dispatchEvent(new Event("change")); })()`, kind)))
		return table()
	}
	for _, k := range []struct {
		kind, key string
	}{{"reject->accept", "reject_to_accept"}, {"error", "errors"}, {"accept->reject", "accept_to_reject"}} {
		rows := selectKind(k.kind)
		want := int(jsonSum[k.key].(float64))
		if len(rows) != want || number("rows-shown") != want {
			t.Errorf("kind %s: %d rows, %s shown; the JSON report %d", k.kind, len(rows), text("rows-shown"), want)
		}
		for _, r := range rows {
			if r[6] != k.kind {
				t.Errorf("kind %s shows %q", k.kind, r)
			}
		}
	}
	// Both at once: accept->reject rows with "invoice".
	run("type a filter again", chromedp.SendKeys(chromedp.CSS("[data-testid=text-filter]"), "invoice"))
	both := 0
	for _, r := range wantRows {
		if r.Change == ChangeAcceptReject && strings.Contains(strings.ToLower(r.Subject), "invoice") {
			both++
		}
	}
	if n := len(table()); n != both || number("rows-shown") != both {
		t.Errorf("accept->reject and invoice: %d rows, want %d", n, both)
	}
	run("clear the filter", chromedp.Evaluate[chromedp.Void](clear))
	selectKind("")

	// The hostile texts are shown as text, and made no element.
	for _, hostile := range []string{hostileScript, hostileImg, hostileFrom, hostileReply} {
		run("filter "+hostile, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(
			`(() => { const q = document.querySelector("[data-testid=text-filter]"); q.value = %q; q.dispatchEvent(new Event("input")); })()`, hostile)))
		rows := table()
		found := false
		for _, r := range rows {
			found = found || slices.Contains(r, hostile) || strings.HasSuffix(r[5], hostile)
		}
		if !found {
			t.Errorf("%q is not shown as text: %q", hostile, rows)
		}
	}
	run("clear the filter", chromedp.Evaluate[chromedp.Void](clear))
	// With every row drawn, none made an element.
	injected, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](
		`[document.querySelectorAll("img, b, iframe, object, embed, [onerror], [onmouseover]").length, document.scripts.length]`))
	if err != nil {
		t.Fatal(err)
	}
	if injected[0] != 0 || injected[1] != 2 { // the scripts: the data and the code
		t.Errorf("%d injected elements, %d scripts in the page", injected[0], injected[1])
	}

	// The screenshot, for a human to look at: the page as it opens.
	run("reload", chromedp.Steps(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("[data-testid=rows] tr"))))
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "replay-report.png")
	if d := os.Getenv("SLUICE_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		shot = filepath.Join(d, "replay-report.png")
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); page: %s", shot, len(png), path)

	events.mu.Lock()
	defer events.mu.Unlock()
	if len(events.dialogs) > 0 {
		t.Errorf("dialogs opened: %q", events.dialogs)
	}
	for _, u := range events.requests {
		if u != pageURL {
			t.Errorf("the page requested %s", u)
		}
	}
	if len(events.requests) == 0 {
		t.Errorf("no request seen, not even the page's: is the listener wrong?")
	}
	if len(events.errors) > 0 {
		t.Errorf("errors in the page: %q", events.errors)
	}
	t.Logf("%d rows, %d buckets, %d requests, in %v", total, len(buckets), len(events.requests), time.Since(started).Round(time.Millisecond))
}
