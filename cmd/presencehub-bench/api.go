package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/presencehub/presencehub/cmd/internal/benchkit"
)

// api sends a JSON request with the admin key; out, if not nil, receives
// the decoded answer. Any status other than want is an error.
func (b *bench) api(ctx context.Context, srv *benchServer, method, path string, in, out any, want int) error {
	if srv == nil {
		return errors.New("no server running")
	}
	var body io.Reader
	if in != nil {
		j, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, srv.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

type benchAccount struct {
	sid, realm string
}

// serverWithAccount starts the bench, the server under test (stopped at
// cleanup) and one account on it.
func (b *bench) serverWithAccount(ctx context.Context) (*benchServer, benchAccount, error) {
	if err := b.start(ctx); err != nil {
		return nil, benchAccount{}, err
	}
	srv, err := b.server(ctx)
	if err != nil {
		return nil, benchAccount{}, err
	}
	b.onCleanup(func(context.Context) { srv.stop() })
	accts, err := b.accounts(ctx, func() *benchServer { return srv }, 1)
	if err != nil {
		return nil, benchAccount{}, err
	}
	return srv, accts[0], nil
}

// accounts creates a service provider and n accounts with their own realms
// through the REST API; they are deleted at the end.
//
// srv gives the server to talk to; the idle benchmark starts a new one for
// every run, and the deletions go to the one running at the end.
func (b *bench) accounts(ctx context.Context, srv func() *benchServer, n int) ([]benchAccount, error) {
	var sp struct{ SID string }
	if err := b.api(ctx, srv(), http.MethodPost, "/v1/ServiceProviders",
		map[string]string{"name": "presencehub bench " + b.name + " " + b.runID}, &sp, http.StatusCreated); err != nil {
		return nil, err
	}
	accts := make([]benchAccount, n)
	b.onCleanup(func(ctx context.Context) {
		benchkit.ParallelN(ctx, 8, len(accts), func(ctx context.Context, i int) error {
			if accts[i].sid != "" {
				_ = b.api(ctx, srv(), http.MethodDelete, "/v1/Accounts/"+accts[i].sid, nil, nil, http.StatusNoContent)
			}
			return nil
		})
		_ = b.api(ctx, srv(), http.MethodDelete, "/v1/ServiceProviders/"+sp.SID, nil, nil, http.StatusNoContent)
	})
	err := benchkit.ParallelN(ctx, 8, n, func(ctx context.Context, i int) error {
		realm := fmt.Sprintf("a%05d.%s.%s.bench.invalid", i, b.runID, b.name)
		var a struct{ SID string }
		err := b.api(ctx, srv(), http.MethodPost, "/v1/Accounts", map[string]string{
			"name": fmt.Sprintf("bench %s %d", b.runID, i), "service_provider_sid": sp.SID, "sip_realm": realm,
		}, &a, http.StatusCreated)
		accts[i] = benchAccount{sid: a.SID, realm: realm}
		return err
	})
	if err != nil {
		return nil, err
	}
	return accts, nil
}
