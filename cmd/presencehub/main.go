// Command presencehub serves live SIP-registration presence from Redis over
// a jambonz-compatible REST API, a websocket stream and a dashboard.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() { cli.Main("presencehub", run) }

const usage = `presencehub: live presence of SIP registrations (jambonz-compatible)

Usage:
  presencehub <command> [flags]

Commands:
  serve      serve the REST API, the websocket stream and the dashboard
  migrate    apply the database migrations
  apikey     manage API keys (apikey create --admin | --service-provider SID | --account SID)
  seed       create demo data (service provider, account, SIP clients) and an admin key
  reencrypt  re-encrypt every stored SIP client password with the current encryption key
  simulate   write registrations into Redis the way a jambonz SBC does
  version    print the version

Run "presencehub <command> --help" for a command's flags. Every flag can also
be set by the environment variable named in its help.
`

// run is the whole program; main only calls it, tests call it too.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return cli.Program{Name: "presencehub", Usage: usage, What: "command", Commands: map[string]cli.Command{
		"serve":     cmdServe,
		"migrate":   cmdMigrate,
		"apikey":    cmdAPIKey,
		"seed":      cmdSeed,
		"reencrypt": cmdReencrypt,
		"simulate":  cmdSimulate,
		"bench": func(_ context.Context, _ []string, _ func(string) string, _, stderr io.Writer) error {
			fmt.Fprintln(stderr, "presencehub: the benchmarks are a command of their own: presencehub-bench <name> (make build puts it in bin/)")
			return cli.ErrUsage
		},
		"version":   printVersion,
		"--version": printVersion,
		"-version":  printVersion,
	}}.Run(ctx, args, getenv, stdout, stderr)
}

func printVersion(_ context.Context, _ []string, _ func(string) string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "presencehub", version)
	return nil
}
