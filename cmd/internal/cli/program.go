package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Command is one subcommand: its arguments after the name, the environment
// its flags fall back to, and where it writes.
type Command func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error

// Program is a command whose first argument names a subcommand.
type Program struct {
	Name     string             // in error messages: "presencehub: …"
	Usage    string             // printed for no argument, help, or an unknown name
	What     string             // what a subcommand is called: "command", "benchmark"
	Commands map[string]Command // by name
}

// Main runs run with the process's arguments, environment and standard
// streams, cancelled by SIGINT or SIGTERM, and exits 1 when it fails (after
// printing the error, unless it is ErrUsage: the usage said it).
func Main(name string, run Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, ErrUsage) {
			fmt.Fprintln(os.Stderr, name+":", err)
		}
		os.Exit(1)
	}
}

// Run runs the subcommand args[0] names. No argument prints the usage to
// stderr (ErrUsage); help prints it to stdout; a subcommand's --help is not
// a failure.
func (p Program) Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, p.Usage)
		return ErrUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, p.Usage)
		return nil
	}
	cmd, ok := p.Commands[name]
	if !ok {
		fmt.Fprintf(stderr, "%s: unknown %s %q\n\n%s", p.Name, p.What, name, p.Usage)
		return ErrUsage
	}
	if err := cmd(ctx, rest, getenv, stdout, stderr); !errors.Is(err, ErrHelp) {
		return err
	}
	return nil
}
