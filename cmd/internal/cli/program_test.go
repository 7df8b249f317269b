package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestProgramRun(t *testing.T) {
	failed := errors.New("failed")
	p := Program{Name: "prog", Usage: "USAGE\n", What: "command", Commands: map[string]Command{
		"ok": func(_ context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
			_, err := io.WriteString(stdout, strings.Join(args, ",")+getenv("X"))
			return err
		},
		"fail": func(context.Context, []string, func(string) string, io.Writer, io.Writer) error { return failed },
		"help": func(context.Context, []string, func(string) string, io.Writer, io.Writer) error { return failed },
		"sub-help": func(context.Context, []string, func(string) string, io.Writer, io.Writer) error {
			return ErrHelp
		},
	}}
	for _, tc := range []struct {
		args               []string
		wantErr            error
		wantOut, wantStErr string
	}{
		{nil, ErrUsage, "", "USAGE\n"},
		{[]string{"ok", "a", "b"}, nil, "a,b=x", ""},
		{[]string{"fail"}, failed, "", ""},
		{[]string{"sub-help"}, nil, "", ""},
		{[]string{"--help"}, nil, "USAGE\n", ""},
		{[]string{"help"}, nil, "USAGE\n", ""}, // help is the program's, before any command of that name
		{[]string{"nope"}, ErrUsage, "", "prog: unknown command \"nope\"\n\nUSAGE\n"},
	} {
		var out, errOut bytes.Buffer
		err := p.Run(context.Background(), tc.args, func(string) string { return "=x" }, &out, &errOut)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("Run(%q) = %v, want %v", tc.args, err, tc.wantErr)
		}
		if out.String() != tc.wantOut || errOut.String() != tc.wantStErr {
			t.Errorf("Run(%q) wrote %q and %q, want %q and %q", tc.args, out.String(), errOut.String(), tc.wantOut, tc.wantStErr)
		}
	}
}
