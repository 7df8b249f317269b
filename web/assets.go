package web

import (
	"bytes"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/presencehub/presencehub/static"
)

// asset is the URL of an embedded asset: versioned by the content hash, so
// it may be cached for a year, and relative module imports inside it
// (./presence.js) resolve to the same version.
func asset(name string) string { return "/static/" + static.Version + "/" + name }

// staticHandler serves /static/<version>/<file> (cached for a year when the
// version is the current one) and /static/<file> (revalidated every time).
// An old version is served the current file, uncached, so a page loaded
// before a deploy still works.
func staticHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, "/static/")
		version, name, versioned := strings.Cut(rest, "/")
		if !versioned {
			name = version
		}
		if name == "" || strings.Contains(name, "/") || name != path.Clean(name) || strings.HasPrefix(name, ".") {
			http.NotFound(w, r)
			return
		}
		b, err := fs.ReadFile(static.FS, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		if versioned && version == static.Version {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "no-cache")
		}
		h.Set("ETag", `"`+static.Version+`"`)
		switch path.Ext(name) {
		case ".js":
			h.Set("Content-Type", "text/javascript; charset=utf-8")
		case ".css":
			h.Set("Content-Type", "text/css; charset=utf-8")
		case ".svg":
			h.Set("Content-Type", "image/svg+xml")
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	})
}
