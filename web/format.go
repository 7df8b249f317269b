package web

import (
	"strconv"
	"time"

	"github.com/presencehub/presencehub/store"
)

// Formatting helpers for the templates. Times are rendered in UTC (the
// server does not know the browser's zone); dashboard.js shows local time.

func isoTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func fmtClock(t time.Time) string { return t.UTC().Format("15:04:05") }

func fmtDateTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05") + " UTC"
}

// fmtLeft formats a countdown: "2m 05s", "45s", "—" for none.
func fmtLeft(r UserRow, now time.Time) string {
	if !r.Registered || r.Expiry.IsZero() {
		return "—"
	}
	return fmtDuration(r.Left(now))
}

func fmtDuration(d time.Duration) string {
	s := int64(d / time.Second)
	if s <= 0 {
		return "0s"
	}
	h, m, sec := s/3600, s/60%60, s%60
	switch {
	case h > 0:
		return strconv.FormatInt(h, 10) + "h " + pad2(m) + "m"
	case m > 0:
		return strconv.FormatInt(m, 10) + "m " + pad2(sec) + "s"
	}
	return strconv.FormatInt(sec, 10) + "s"
}

func pad2(n int64) string {
	if n < 10 {
		return "0" + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10)
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func flagValue(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func scopeLabel(p store.Principal) string {
	switch p.Scope {
	case store.ScopeAdmin:
		return "Admin"
	case store.ScopeServiceProvider:
		return "Service provider"
	case store.ScopeAccount:
		return "Account"
	}
	return p.Scope
}

// sortURL is the link of a column header: sort by key, flipping the
// direction when it is already the sort column; back to page 1.
func sortURL(accountSID string, q TableQuery, key string) string {
	n := q
	n.Page = 1
	if q.Sort == key {
		n.Desc = !q.Desc
	} else {
		n.Sort, n.Desc = key, false
	}
	return withQuery(accountURL(accountSID), n)
}

func ariaSort(q TableQuery, key string) string {
	switch {
	case q.Sort != key:
		return "none"
	case q.Desc:
		return "descending"
	}
	return "ascending"
}

func pageURL(accountSID string, q TableQuery, page int) string {
	n := q
	n.Page = page
	return withQuery(accountURL(accountSID), n)
}

func withQuery(path string, q TableQuery) string {
	if e := q.Values().Encode(); e != "" {
		return path + "?" + e
	}
	return path
}

func statusLabel(s string) string {
	if s == StatusExpiring {
		return "expiring soon"
	}
	return s
}
