package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The REST benchmark's in-run reference: a do-nothing net/http handler, in
// a process of its own as the server is, that answers each request of the
// benchmark with the bytes presencehub answered it with (read once before
// the runs), under the same load. presencehub's requests/s divided by its
// tells how close to net/http's own cost per request the endpoint is, on
// whatever machine it runs.

// restReferenceFiles are the answers the reference serves, in its folder.
const (
	refList   = "list.json"   // GET …/RegisteredSipUsers
	refSingle = "single.json" // GET …/RegisteredSipUsers/{name}
	refPost   = "post.json"   // POST …/RegisteredSipUsers
)

// restReferenceHandler answers POST with post (the body read and dropped),
// a GET of a path ending in /RegisteredSipUsers with list, any other GET
// with single.
func restReferenceHandler(list, single, post []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := single
		switch {
		case r.Method == http.MethodPost:
			_, _ = io.Copy(io.Discard, r.Body)
			body = post
		case strings.HasSuffix(r.URL.Path, "/RegisteredSipUsers"):
			body = list
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write(body)
	})
}

// benchRESTReference is the reference's process ("presencehub-bench
// rest-reference <folder>"): it serves the folder's answers on a free
// loopback port, prints "listening <url>" and serves until its stdin
// closes.
func benchRESTReference(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: presencehub-bench rest-reference <folder with list.json, single.json, post.json>")
	}
	var bodies [3][]byte
	for i, name := range []string{refList, refSingle, refPost} {
		b, err := os.ReadFile(filepath.Join(args[0], name))
		if err != nil {
			return err
		}
		bodies[i] = b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: restReferenceHandler(bodies[0], bodies[1], bodies[2]), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening http://%s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, stdin)
	return srv.Close()
}

// restReference is a running reference process.
type restReference struct {
	url   string
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startRESTReference writes the answers into dir and starts the reference
// process serving them.
func startRESTReference(dir string, list, single, post []byte) (*restReference, error) {
	for name, b := range map[string][]byte{refList: list, refSingle: single, refPost: post} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "rest-reference", dir)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the REST reference: %w", err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the REST reference did not start: %q %v", line, err)
	}
	return &restReference{url: url, cmd: cmd, stdin: stdin}, nil
}

// server is the reference as a benchServer, for the CPU meter.
func (r *restReference) server() *benchServer {
	return &benchServer{url: r.url, pid: r.cmd.Process.Pid}
}

func (r *restReference) stop() {
	r.stdin.Close()
	_ = r.cmd.Wait()
}

// fetchAnswer returns the body the server answers req with (a 2xx).
func (b *bench) fetchAnswer(ctx context.Context, req *http.Request) ([]byte, error) {
	req = req.WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+b.key)
	resp, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	return body, nil
}
