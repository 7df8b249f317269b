// Package static holds the dashboard's browser assets — the stream client
// (presence.js), the page logic (dashboard.js), the one stylesheet (app.css)
// and the icon (favicon.svg) — embedded into the binary, so the server needs no files on disk
// and no build step.
//
// Version is a hash of every embedded file. The dashboard serves the assets
// under /static/<Version>/…, so they can be cached for a year, and a
// relative ES-module import (./presence.js) keeps the same version.
package static

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"sort"
)

// FS holds the embedded assets, at the root (FS.Open("app.css")).
//
//go:embed *.js *.css *.svg
var FS embed.FS

// Version is the first 12 hex digits of a SHA-256 over the names and contents
// of every file in FS: it changes whenever any asset changes.
var Version = version(FS)

func version(fsys fs.FS) string {
	names, err := fs.Glob(fsys, "*")
	if err != nil {
		panic("static: " + err.Error())
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			panic("static: " + err.Error())
		}
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
