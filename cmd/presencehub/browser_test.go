package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser is a headless Chromium (Debian's package) driven over CDP.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("browser tests need Chromium: install it with `apt-get install chromium` (make test does this when run as root)")
	return ""
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("navigate %s: %v", url, err)
	}
}

// eval runs JavaScript in the page and decodes its result into T.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls a boolean JavaScript expression until it is true.
func (b *browser) waitJS(what, js string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !eval[bool](b, "!!("+js+")") {
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: not true within %v (page: %s)", what, timeout, eval[string](b, "location.href + ' ' + document.body.innerText.slice(0, 400)"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

func rowSelector(user string) string {
	return fmt.Sprintf(`[data-testid="user-row"][data-user=%s]`, jsString(user))
}

func (b *browser) status(user string) string {
	return eval[string](b, `(document.querySelector(`+jsString(rowSelector(user))+`)||{dataset:{}}).dataset.status || ""`)
}

func (b *browser) signIn(url, key string) {
	b.t.Helper()
	b.navigate(url + "/")
	b.waitJS("sign-in form with an api_key field", `document.querySelector('form input[name="api_key"]')`, 5*time.Second)
	eval[bool](b, `(() => { document.querySelector('input[name="api_key"]').value = `+jsString(key)+`;
		document.querySelector('input[name="api_key"]').form.requestSubmit(); return true })()`)
	b.waitJS("signed in", `!document.querySelector('input[name="api_key"]') && document.readyState === "complete"`, 5*time.Second)
}

// TestDashboardInBrowser drives the dashboard in headless Chromium: sign in,
// see a registered user, see new registrations and lapses live without a
// reload, create a client with the form, and be refused another account.
func TestDashboardInBrowser(t *testing.T) {
	in := startInstance(t)
	sid, key := in.account("web.example.com")
	otherSID, _ := in.account("other.example.com")
	in.call(key, "POST", "/v1/Clients", map[string]any{"username": "dave", "password": "pw"}, 201, nil)
	in.register("alice", "web.example.com", "wss", time.Hour)
	in.eventually("alice in the hub", 2*time.Second, func() bool {
		var l []string
		in.call(key, "GET", "/v1/Accounts/"+sid+"/RegisteredSipUsers", nil, 200, &l)
		return len(l) == 1
	})

	b := newBrowser(t)
	b.signIn(in.url, key)
	if loc := eval[string](b, "location.pathname"); loc != "/accounts/"+sid {
		t.Fatalf("an account key lands on %s, want its account page /accounts/%s", loc, sid)
	}
	b.waitJS("alice shown online", `document.querySelector(`+jsString(rowSelector("alice")+`[data-status="online"]`)+`)`, 3*time.Second)
	if got := b.status("dave"); got != "offline" {
		t.Errorf("dave (a client, not registered) has status %q, want offline", got)
	}
	b.waitJS("stream connected", `document.querySelector('[data-testid="connection-state"]').textContent.toLowerCase().includes("live")`, 5*time.Second)
	online := func() string {
		return strings.TrimSpace(eval[string](b, `document.querySelector('[data-testid="count-online"]').textContent`))
	}
	before := online()
	eval[bool](b, "window.__noReload = true")

	start := time.Now()
	in.register("bob", "web.example.com", "udp", time.Hour)
	b.waitJS("bob's row appears online", `document.querySelector(`+jsString(rowSelector("bob")+`[data-status="online"]`)+`)`, 2*time.Second)
	b.waitJS("online counter changes", `document.querySelector('[data-testid="count-online"]').textContent.trim() !== `+jsString(before), 2*time.Second)
	t.Logf("bob appeared after %v; online %s -> %s", time.Since(start).Round(time.Millisecond), before, online())

	exp := in.register("dave", "web.example.com", "tcp", 2*time.Second)
	b.waitJS("dave online", `document.querySelector(`+jsString(rowSelector("dave")+`[data-status]:not([data-status="offline"])`)+`)`, 2*time.Second)
	b.waitJS("dave turns offline when his registration lapses", `document.querySelector(`+jsString(rowSelector("dave")+`[data-status="offline"]`)+`)`,
		time.Until(time.UnixMilli(exp))+2*time.Second)
	if !eval[bool](b, "window.__noReload === true") {
		t.Errorf("the page reloaded; live updates must be applied in place")
	}

	// Create a client through the form.
	b.navigate(in.url + "/accounts/" + sid + "/clients/new")
	b.waitJS("client form", `document.querySelector('form input[name="username"]')`, 5*time.Second)
	eval[bool](b, `(() => { const f = document.querySelector('input[name="username"]').form;
		f.querySelector('input[name="username"]').value = "zoe";
		f.querySelector('input[name="password"]').value = "s3cret-pass";
		f.requestSubmit(); return true })()`)
	b.waitJS("zoe listed after creating her", `location.pathname === `+jsString("/accounts/"+sid)+` && document.querySelector(`+jsString(rowSelector("zoe"))+`)`, 5*time.Second)
	var clients []map[string]any
	in.call(key, "GET", "/v1/Clients", nil, 200, &clients)
	found := false
	for _, c := range clients {
		if c["username"] == "zoe" {
			found = true
		}
	}
	if !found {
		t.Errorf("client zoe created in the browser is not in GET /v1/Clients: %v", clients)
	}

	// An account key cannot open another account's page.
	b.navigate(in.url + "/accounts/" + otherSID)
	b.waitJS("refused", `document.readyState === "complete"`, 5*time.Second)
	if eval[bool](b, `!!document.querySelector('[data-testid="user-row"]')`) || !eval[bool](b, `!!document.querySelector('[data-testid="error-page"]')`) {
		t.Errorf("another account's page was shown to an account key: %s", eval[string](b, "document.body.innerText.slice(0, 300)"))
	}
}

// TestScreenshot writes the README's picture of the account page with demo
// data when PRESENCEHUB_SCREENSHOT names the file (make screenshot).
func TestScreenshot(t *testing.T) {
	path := os.Getenv("PRESENCEHUB_SCREENSHOT")
	if path == "" {
		t.Skip("set PRESENCEHUB_SCREENSHOT=<file.png> (make screenshot) to regenerate the README picture")
	}
	in := startInstance(t)
	var seed strings.Builder
	getenv := func(k string) string { return in.env[k] }
	if err := run(context.Background(), []string{"seed"}, getenv, &seed, in.stderr); err != nil {
		t.Fatalf("seed: %v", err)
	}
	var sid, key string
	for _, line := range strings.Split(seed.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "account_sid="); ok {
			sid = v
		}
		if v, ok := strings.CutPrefix(line, "admin_key="); ok {
			key = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	go run(ctx, []string{"simulate", "--realm", demoRealm, "--users", "24", "--rate", "20", "--seed", "7", "--duration", "8s"}, getenv, os.Stderr, os.Stderr)
	time.Sleep(4 * time.Second)
	b := newBrowser(t)
	b.signIn(in.url, key)
	b.navigate(in.url + "/accounts/" + sid)
	b.waitJS("rows", `document.querySelectorAll('[data-testid="user-row"][data-status="online"]').length > 5`, 10*time.Second)
	time.Sleep(2 * time.Second)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", filepath.Base(path), len(png))
}
