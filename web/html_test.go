package web

import (
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Helpers to assert on rendered HTML by structure, not by substrings.

func parseHTML(t *testing.T, s string) *html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatalf("parse html: %v", err)
	}
	return doc
}

func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func attrVal(n *html.Node, key string) string {
	v, _ := attr(n, key)
	return v
}

func byAttr(doc *html.Node, key, val string) []*html.Node {
	return findAll(doc, func(n *html.Node) bool { v, ok := attr(n, key); return ok && v == val })
}

func byTestID(doc *html.Node, id string) []*html.Node { return byAttr(doc, "data-testid", id) }

func oneByTestID(t *testing.T, doc *html.Node, id string) *html.Node {
	t.Helper()
	ns := byTestID(doc, id)
	if len(ns) != 1 {
		t.Fatalf("want one data-testid=%q, found %d", id, len(ns))
	}
	return ns[0]
}

func byTag(doc *html.Node, tag string) []*html.Node {
	return findAll(doc, func(n *html.Node) bool { return n.Data == tag })
}

func textOf(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// inputNamed finds the form control with the given name inside n.
func inputNamed(n *html.Node, name string) *html.Node {
	for _, c := range findAll(n, func(c *html.Node) bool {
		return (c.Data == "input" || c.Data == "select" || c.Data == "textarea") && attrVal(c, "name") == name
	}) {
		return c
	}
	return nil
}

// assertCSPClean checks a page can run under the strict CSP: every script is
// external or a JSON data block, and no element has a style attribute or an
// inline event handler; no <style> element either.
func assertCSPClean(t *testing.T, doc *html.Node) {
	t.Helper()
	for _, s := range byTag(doc, "script") {
		src, hasSrc := attr(s, "src")
		typ := attrVal(s, "type")
		switch {
		case hasSrc && src != "" && s.FirstChild == nil:
		case typ == "application/json" && !hasSrc:
		default:
			t.Errorf("inline script: %s", renderNode(s))
		}
	}
	if st := byTag(doc, "style"); len(st) > 0 {
		t.Errorf("found a <style> element")
	}
	for _, n := range findAll(doc, func(*html.Node) bool { return true }) {
		for _, a := range n.Attr {
			if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s> has inline %s=%q", n.Data, a.Key, a.Val)
			}
			if (a.Key == "href" || a.Key == "src" || a.Key == "action") && strings.HasPrefix(strings.ToLower(a.Val), "javascript:") {
				t.Errorf("<%s> has a javascript: URL", n.Data)
			}
		}
	}
}

func renderNode(n *html.Node) string {
	var b strings.Builder
	_ = html.Render(&b, n)
	return b.String()
}
