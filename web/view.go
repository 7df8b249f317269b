package web

import (
	"cmp"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presencehub/presencehub/hub"
	"github.com/presencehub/presencehub/store"
)

// Status of a row on the account page.
const (
	StatusOnline   = "online"
	StatusExpiring = "expiring"
	StatusOffline  = "offline"
)

// ExpiringWithin is how close to its expiry a registration counts as
// "expiring" rather than "online".
const ExpiringWithin = 60 * time.Second

// PageSize is how many user rows the server renders and JS shows per page.
const PageSize = 100

// FeedSize is how many changes the live feed keeps.
const FeedSize = 100

// Classify returns the status of a user: offline when not registered or
// when its expiry has passed, expiring when less than ExpiringWithin is left,
// online otherwise (also when the expiry is unknown, the zero time).
func Classify(registered bool, expiry, now time.Time) string {
	if !registered {
		return StatusOffline
	}
	if expiry.IsZero() {
		return StatusOnline
	}
	left := expiry.Sub(now)
	switch {
	case left <= 0:
		return StatusOffline
	case left < ExpiringWithin:
		return StatusExpiring
	}
	return StatusOnline
}

// UserRow is one line of the account table: a SIP client, a registered
// user, or both (matched by username, ignoring case).
type UserRow struct {
	Name       string
	ClientSID  string // "" for a registration without a client row
	Active     bool   // the client's is_active (true when there is no client row)
	Registered bool
	Status     string
	Protocol   string
	Contact    string
	Proxy      string
	Since      time.Time // registered since; zero when offline
	Expiry     time.Time // zero when offline or unknown
	LastEvent  string
	EventTime  time.Time
	// The allow_direct_* flags: the registration's when registered (what the
	// SBC granted, as REST and the stream report them), else the client's.
	App, Queue, User bool
	// Flapping: more sessions or NAT binding changes in the last hour than
	// the dashboard's FlapSessions (from the registration history).
	Flapping bool
}

// HasClient reports whether the row has a SIP client behind it.
func (r UserRow) HasClient() bool { return r.ClientSID != "" }

// Left is the time left before the registration expires (0 when offline or
// unknown).
func (r UserRow) Left(now time.Time) time.Duration {
	if !r.Registered || r.Expiry.IsZero() {
		return 0
	}
	return max(r.Expiry.Sub(now), 0)
}

// userExpiry is when a registration lapses, in the same terms the stream
// gives the browser (expiryTime), so server render and JS agree; the hub's
// own deadline when the SBC gave none.
func userExpiry(u hub.UserView) time.Time {
	if u.ExpiryTime > 0 {
		return time.UnixMilli(u.ExpiryTime)
	}
	return u.Deadline
}

// BuildRows merges an account's SIP clients with its registered users into
// one row per username, sorted by name, each classified at now.
func BuildRows(clients []store.Client, users []hub.UserView, now time.Time) []UserRow {
	rows := make([]UserRow, 0, max(len(clients), len(users)))
	index := make(map[string]int, len(clients)+len(users))
	for _, c := range clients {
		k := hub.Fold(c.Username)
		if _, dup := index[k]; dup {
			continue
		}
		index[k] = len(rows)
		rows = append(rows, UserRow{
			Name: c.Username, ClientSID: c.SID, Active: c.IsActive, Status: StatusOffline,
			App: c.AllowDirectAppCalling, Queue: c.AllowDirectQueueCalling, User: c.AllowDirectUserCalling,
		})
	}
	for _, u := range users {
		k := hub.Fold(u.Name)
		i, ok := index[k]
		if !ok {
			i = len(rows)
			index[k] = i
			rows = append(rows, UserRow{Name: u.Name, Active: true})
		}
		r := &rows[i]
		r.Registered = true
		r.Protocol, r.Contact, r.Proxy = u.Protocol, u.Contact, u.Proxy
		r.Since, r.Expiry = u.Since, userExpiry(u)
		r.LastEvent, r.EventTime = u.LastEvent, u.EventTime
		r.App, r.Queue, r.User = u.Flags.App, u.Flags.Queue, u.Flags.User
		r.Status = Classify(true, r.Expiry, now)
	}
	slices.SortFunc(rows, func(a, b UserRow) int { return compareNames(a.Name, b.Name) })
	return rows
}

func compareNames(a, b string) int {
	if c := cmp.Compare(hub.Fold(a), hub.Fold(b)); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

// Counters summarise the rows of an account.
type Counters struct {
	Total, Online, Expiring, Offline int
	Protocols                        []ProtocolCount // registered users by protocol, sorted
}

// Registered is the number of users with a registration (online or expiring).
func (c Counters) Registered() int { return c.Online + c.Expiring }

// ProtocolCount is the number of registered users on one protocol.
type ProtocolCount struct {
	Protocol string // "unknown" when the SBC gave none
	Count    int
}

// Count computes the counters of rows.
func Count(rows []UserRow) Counters {
	c := Counters{Total: len(rows)}
	protos := map[string]int{}
	for _, r := range rows {
		switch r.Status {
		case StatusOnline:
			c.Online++
		case StatusExpiring:
			c.Expiring++
		default:
			c.Offline++
		}
		if r.Registered && r.Status != StatusOffline {
			protos[protocolLabel(r.Protocol)]++
		}
	}
	for p, n := range protos {
		c.Protocols = append(c.Protocols, ProtocolCount{p, n})
	}
	slices.SortFunc(c.Protocols, func(a, b ProtocolCount) int { return cmp.Compare(a.Protocol, b.Protocol) })
	return c
}

func protocolLabel(p string) string {
	if p == "" {
		return "unknown"
	}
	return strings.ToLower(p)
}

// TableQuery is the search, filter, sort and page of the account table. The
// same query string drives the server render (JavaScript off) and the JS
// model.
type TableQuery struct {
	Q        string
	Status   string // "" or a status
	Protocol string // "" or a protocol label
	Sort     string // a column key
	Desc     bool
	Page     int    // 1-based
	Flapping bool   // only flapping users
	Range    string // the chart's range key; "" for the default
}

// sortKeys are the sortable columns, in table order.
var sortKeys = []string{"name", "status", "protocol", "contact", "proxy", "since", "left", "event", "app", "queue", "user"}

// ParseTableQuery reads a TableQuery from a query string, ignoring values it
// does not know (a hand-edited URL never breaks the page).
func ParseTableQuery(v url.Values) TableQuery {
	q := TableQuery{Q: strings.TrimSpace(v.Get("q")), Sort: "name", Page: 1}
	if len(q.Q) > 200 {
		q.Q = q.Q[:200]
	}
	switch s := v.Get("status"); s {
	case StatusOnline, StatusExpiring, StatusOffline:
		q.Status = s
	}
	if p := strings.ToLower(v.Get("protocol")); p != "" && len(p) <= 16 {
		q.Protocol = p
	}
	if s := v.Get("sort"); slices.Contains(sortKeys, s) {
		q.Sort = s
	}
	q.Desc = v.Get("dir") == "desc"
	q.Flapping = v.Get("flapping") == "1"
	if r := v.Get("range"); r != ChartRanges[0].Key && chartRange(r).Key == r {
		q.Range = r
	}
	if n, err := strconv.Atoi(v.Get("page")); err == nil && n > 1 {
		q.Page = n
	}
	return q
}

// Values encodes q as a query string (defaults left out).
func (q TableQuery) Values() url.Values {
	v := url.Values{}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.Protocol != "" {
		v.Set("protocol", q.Protocol)
	}
	if q.Sort != "" && q.Sort != "name" {
		v.Set("sort", q.Sort)
	}
	if q.Desc {
		v.Set("dir", "desc")
	}
	if q.Page > 1 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.Flapping {
		v.Set("flapping", "1")
	}
	if q.Range != "" {
		v.Set("range", q.Range)
	}
	return v
}

// Dir is "asc" or "desc".
func (q TableQuery) Dir() string {
	if q.Desc {
		return "desc"
	}
	return "asc"
}

// Table is one page of filtered, sorted rows.
type Table struct {
	Rows     []UserRow
	Matching int // rows matching the filter
	Page     int
	Pages    int
}

// ApplyQuery filters and sorts rows (sorted by name on entry) and cuts the
// requested page (the last page when q.Page is past it).
func ApplyQuery(rows []UserRow, q TableQuery, now time.Time) Table {
	// A search, not an identity: Unicode case-insensitive, so "zoë" finds
	// "ZOË" (rows are merged by hub.Fold).
	needle := strings.ToLower(q.Q)
	out := make([]UserRow, 0, len(rows))
	for _, r := range rows {
		if needle != "" && !strings.Contains(strings.ToLower(r.Name), needle) {
			continue
		}
		if q.Status != "" && r.Status != q.Status {
			continue
		}
		if q.Protocol != "" && (!r.Registered || protocolLabel(r.Protocol) != q.Protocol) {
			continue
		}
		if q.Flapping && !r.Flapping {
			continue
		}
		out = append(out, r)
	}
	if q.Sort != "name" || q.Desc {
		by := rowComparator(q.Sort, now)
		slices.SortStableFunc(out, func(a, b UserRow) int {
			c := by(a, b)
			if c == 0 {
				c = compareNames(a.Name, b.Name)
			}
			if q.Desc {
				return -c
			}
			return c
		})
	}
	t := Table{Matching: len(out), Pages: max(1, (len(out)+PageSize-1)/PageSize)}
	t.Page = min(max(q.Page, 1), t.Pages)
	start := (t.Page - 1) * PageSize
	t.Rows = out[start:min(start+PageSize, len(out))]
	return t
}

var statusOrder = map[string]int{StatusOnline: 0, StatusExpiring: 1, StatusOffline: 2}

func rowComparator(key string, now time.Time) func(a, b UserRow) int {
	switch key {
	case "status":
		return func(a, b UserRow) int { return cmp.Compare(statusOrder[a.Status], statusOrder[b.Status]) }
	case "protocol":
		return func(a, b UserRow) int { return cmp.Compare(a.Protocol, b.Protocol) }
	case "contact":
		return func(a, b UserRow) int { return cmp.Compare(a.Contact, b.Contact) }
	case "proxy":
		return func(a, b UserRow) int { return cmp.Compare(a.Proxy, b.Proxy) }
	case "since":
		return func(a, b UserRow) int { return cmp.Compare(a.Since.UnixMilli(), b.Since.UnixMilli()) }
	case "left":
		return func(a, b UserRow) int { return cmp.Compare(a.Left(now), b.Left(now)) }
	case "event":
		return func(a, b UserRow) int { return cmp.Compare(a.EventTime.UnixMilli(), b.EventTime.UnixMilli()) }
	case "app":
		return func(a, b UserRow) int { return cmpBool(a.App, b.App) }
	case "queue":
		return func(a, b UserRow) int { return cmpBool(a.Queue, b.Queue) }
	case "user":
		return func(a, b UserRow) int { return cmpBool(a.User, b.User) }
	}
	return func(a, b UserRow) int { return compareNames(a.Name, b.Name) }
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// FeedItem is one change in the live feed.
type FeedItem struct {
	Seq   uint64
	Time  time.Time
	User  string
	Event string
}

// BuildFeed turns the hub's recent changes (newest first) into feed items.
func BuildFeed(changes []*hub.Change) []FeedItem {
	out := make([]FeedItem, 0, len(changes))
	for _, c := range changes {
		if c == nil {
			continue
		}
		out = append(out, FeedItem{Seq: c.Seq, Time: c.Time, User: c.User, Event: c.Event})
	}
	return out
}

// OverviewRow is one account on the overview page.
type OverviewRow struct {
	SID, Name, Realm  string
	Online            int // registered users
	Clients           int
	ChangesLastMinute int
	Expiring          int    // registrations lapsing within ExpiringWithin (visible rows only)
	Series            []int  // online at the end of each of the last 60 minutes (visible rows only)
	Spark             string // SVG polyline points of Series
}

// BuildOverview lists accounts (sorted by name) with their counters; stats
// gives the hub's counters of a realm.
func BuildOverview(accounts []store.Account, clients []store.Client, stats func(realm string) hub.Stats) []OverviewRow {
	perAccount := make(map[string]int, len(accounts))
	for _, c := range clients {
		perAccount[c.AccountSID]++
	}
	out := make([]OverviewRow, 0, len(accounts))
	for _, a := range accounts {
		row := OverviewRow{SID: a.SID, Name: a.Name, Realm: a.SIPRealm, Clients: perAccount[a.SID]}
		if a.SIPRealm != "" {
			st := stats(a.SIPRealm)
			row.Online, row.ChangesLastMinute, row.Series = st.Online, st.ChangesLastMinute, st.Series
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(a, b OverviewRow) int {
		if c := compareNames(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.SID, b.SID)
	})
	return out
}

// SparkW and SparkH are the overview sparkline's SVG size (static/overview.js
// draws the same; keep in sync).
const (
	SparkW = 120
	SparkH = 24
)

// Sparkline returns the polyline points of series scaled into SparkW×SparkH
// (zero at the bottom; the top is the series' maximum, at least 1).
func Sparkline(series []int) string {
	if len(series) == 0 {
		return ""
	}
	top := 1
	for _, v := range series {
		top = max(top, v)
	}
	var b strings.Builder
	for i, v := range series {
		if i > 0 {
			b.WriteByte(' ')
		}
		x := 0.0
		if len(series) > 1 {
			x = float64(i) * SparkW / float64(len(series)-1)
		}
		y := SparkH - 1 - float64(v)*(SparkH-2)/float64(top)
		b.WriteString(strconv.FormatFloat(x, 'f', 1, 64) + "," + strconv.FormatFloat(y, 'f', 1, 64))
	}
	return b.String()
}
