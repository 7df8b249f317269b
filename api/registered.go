package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
)

// Limits of POST …/RegisteredSipUsers.
const (
	maxNames   = 10000 // names per request
	maxNameLen = 256   // bytes per name
)

var errNoRealm = badRequest("account does not have sip_realm configuration")

// accountRealm resolves {AccountSid} for the caller and returns its SIP
// realm; an account without one cannot be listed.
func (s *server) accountRealm(r *http.Request) (string, error) {
	a, err := s.account(r.Context(), chi.URLParam(r, "AccountSid"))
	if err != nil {
		return "", err
	}
	if a.SIPRealm == "" {
		return "", errNoRealm
	}
	return a.SIPRealm, nil
}

// handleRegisteredList answers GET /v1/Accounts/{AccountSid}/RegisteredSipUsers
// with the sorted "user@realm" strings of the account's registered users.
func (s *server) handleRegisteredList() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		realm, err := s.accountRealm(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.pres.ListJSON(realm))
	})
}

// handleRegisteredDetails answers POST …/RegisteredSipUsers: with an array
// of usernames, one 9-field object per name in input order; with no body or
// an empty array, every registered user of the account.
func (s *server) handleRegisteredDetails() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		realm, err := s.accountRealm(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		names, err := readNames(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		var b []byte
		if len(names) == 0 {
			b = s.pres.AppendAll(nil, realm)
		} else {
			b = s.pres.AppendUsers(make([]byte, 0, 320*len(names)), realm, names)
		}
		writeJSON(w, http.StatusOK, b)
	})
}

// readBody reads at most maxBody bytes, sized by Content-Length when given.
func readBody(r *http.Request) ([]byte, error) {
	rd := http.MaxBytesReader(nil, r.Body, maxBody)
	if n := r.ContentLength; n > 0 && n <= maxBody {
		buf := bytes.NewBuffer(make([]byte, 0, n+1))
		_, err := buf.ReadFrom(rd)
		return buf.Bytes(), err
	}
	return io.ReadAll(rd)
}

// readNames reads the POST body: nothing, null or an array of strings.
func readNames(r *http.Request) ([]string, error) {
	body, err := readBody(r)
	if err != nil {
		var big *http.MaxBytesError
		if errors.As(err, &big) {
			return nil, badRequest("request body is larger than %d bytes", maxBody)
		}
		return nil, badRequest("request body could not be read")
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil
	}
	if body[0] != '[' && !bytes.Equal(body, []byte("null")) {
		return nil, badRequest("request body must be a JSON array of usernames")
	}
	if names, ok := scanNames(body); ok {
		return checkNames(names)
	}
	var names []string
	if err := json.Unmarshal(body, &names); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, badRequest("request body is not valid JSON (at byte %d)", syn.Offset)
		}
		return nil, badRequest("request body must be a JSON array of usernames (strings)")
	}
	return checkNames(names)
}

func checkNames(names []string) ([]string, error) {
	if len(names) > maxNames {
		return nil, badRequest("at most %d usernames per request, got %d", maxNames, len(names))
	}
	for _, n := range names {
		if len(n) > maxNameLen {
			return nil, badRequest("usernames are at most %d bytes long", maxNameLen)
		}
	}
	return names, nil
}

// scanNames is the fast path of readNames for the common body: an array of
// plain strings (no escapes, valid UTF-8). ok is false for anything else,
// which then goes through encoding/json for the exact answer or error.
func scanNames(b []byte) (names []string, ok bool) {
	if !utf8.Valid(b) {
		return nil, false
	}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return []string{}, skipSpace(b, i+1) == len(b)
	}
	names = make([]string, 0, bytes.Count(b, []byte{','})+1)
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		j := i + 1
		for j < len(b) && b[j] != '"' {
			if b[j] == '\\' || b[j] < 0x20 {
				return nil, false
			}
			j++
		}
		if j >= len(b) {
			return nil, false
		}
		names = append(names, string(b[i+1:j]))
		i = skipSpace(b, j+1)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ']' {
			return names, skipSpace(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// handleRegisteredOne answers GET …/RegisteredSipUsers/{Client}: always 200
// with the 9 fields, "inactive" when not registered.
func (s *server) handleRegisteredOne() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, err := s.account(r.Context(), chi.URLParam(r, "AccountSid"))
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		name, err := clientParam(r)
		if err != nil {
			fail(w, r, s.log, err)
			return
		}
		writeJSON(w, http.StatusOK, s.pres.Get(a.SIPRealm, name))
	})
}

// clientParam is the {Client} path segment, unescaped and bounded like the
// names of a POST body.
func clientParam(r *http.Request) (string, error) {
	name, err := url.PathUnescape(chi.URLParam(r, "Client"))
	if err != nil {
		return "", badRequest("malformed username in path")
	}
	if len(name) > maxNameLen {
		return "", badRequest("usernames are at most %d bytes long", maxNameLen)
	}
	return name, nil
}
