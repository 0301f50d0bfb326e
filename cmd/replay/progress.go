package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/sluice-mail/sluice/internal/replay"
)

// bar draws a run's progress on a terminal's last line and keeps the log
// lines written through it above the bar.
type bar struct {
	mu    sync.Mutex
	w     io.Writer
	line  string // the bar as last drawn; "" when not shown
	last  time.Time
	width int
}

// minRedraw spaces redraws: a terminal needs no more than ten a second.
const minRedraw = 100 * time.Millisecond

// Write writes log lines above the bar.
func (b *bar) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.line != "" {
		io.WriteString(b.w, "\r\x1b[K")
	}
	n, err := b.w.Write(p)
	if b.line != "" {
		io.WriteString(b.w, b.line)
	}
	return n, err
}

// Update redraws the bar, at most every minRedraw but always for the
// first and the last message.
func (b *bar) Update(p replay.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if p.Done != 0 && p.Done != p.Total && now.Sub(b.last) < minRedraw {
		return
	}
	b.last = now
	b.line = barLine(p, b.width)
	io.WriteString(b.w, "\r\x1b[K"+b.line)
}

// Done ends the bar's line, so that what follows starts on its own.
func (b *bar) Done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.line != "" {
		io.WriteString(b.w, "\n")
		b.line = ""
	}
}

// barLine is one line of progress:
//
//	[##########..........]  5120/10240  50%  412.3 msg/s  ETA 0:12  changed 7  errors 0
func barLine(p replay.Progress, width int) string {
	if width <= 0 {
		width = 24
	}
	frac := 1.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	filled := int(frac * float64(width))
	var rate float64
	if s := p.Elapsed.Seconds(); s > 0 {
		rate = float64(p.Done) / s
	}
	etaText := "-"
	if rate > 0 && p.Done < p.Total {
		etaText = clock(time.Duration(float64(p.Total-p.Done) / rate * float64(time.Second)))
	} else if p.Done == p.Total {
		etaText = "0:00"
	}
	return fmt.Sprintf("[%s%s] %d/%d %3.0f%%  %.1f msg/s  ETA %s  changed %d  errors %d",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.Done, p.Total, frac*100,
		rate, etaText, p.Changed, p.Errors)
}

// clock writes d as H:MM:SS, or M:SS under an hour.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
