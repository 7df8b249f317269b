// Command presencehub serves live SIP-registration presence from Redis over
// a jambonz-compatible REST API, a websocket stream and a dashboard.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, cli.ErrUsage) {
			fmt.Fprintln(os.Stderr, "presencehub:", err)
		}
		os.Exit(1)
	}
}

const usage = `presencehub: live presence of SIP registrations (jambonz-compatible)

Usage:
  presencehub <command> [flags]

Commands:
  serve      serve the REST API, the websocket stream and the dashboard
  migrate    apply the database migrations
  apikey     manage API keys (apikey create --admin | --service-provider SID | --account SID)
  seed       create demo data (service provider, account, SIP clients) and an admin key
  simulate   write registrations into Redis the way a jambonz SBC does
  version    print the version

Run "presencehub <command> --help" for a command's flags. Every flag can also
be set by the environment variable named in its help.
`

// run is the whole program; main only calls it, tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ErrUsage
	}
	err := dispatch(ctx, args, getenv, stdout, stderr)
	if errors.Is(err, cli.ErrHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		return cmdMigrate(ctx, rest, getenv, stdout, stderr)
	case "apikey":
		return cmdAPIKey(ctx, rest, getenv, stdout, stderr)
	case "seed":
		return cmdSeed(ctx, rest, getenv, stdout, stderr)
	case "simulate":
		return cmdSimulate(ctx, rest, getenv, stdout, stderr)
	case "bench":
		fmt.Fprintln(stderr, "presencehub: the benchmarks are a command of their own: presencehub-bench <name> (make build puts it in bin/)")
		return cli.ErrUsage
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "presencehub", version)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "presencehub: unknown command %q\n\n%s", cmd, usage)
	return cli.ErrUsage
}
