package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

func cmdMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("presencehub migrate", "Apply the embedded database migrations (idempotent).", getenv, stderr)
	c := cli.AddCommon(fs, false, true)
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	db, err := cli.OpenDB(ctx, c, false, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := db.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	for _, m := range applied {
		fmt.Fprintln(stdout, "applied", m)
	}
	return nil
}

func cmdAPIKey(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(stdout, "Usage: presencehub apikey create --admin | --service-provider SID | --account SID [--expires-in D]")
			return nil
		}
		fmt.Fprintln(stderr, "Usage: presencehub apikey create --admin | --service-provider SID | --account SID [--expires-in D]")
		return cli.ErrUsage
	}
	fs := cli.NewFlagSet("presencehub apikey create", "Create an API key and print its token (shown only once). The first admin key is made this way.", getenv, stderr)
	c := cli.AddCommon(fs, false, true)
	admin := fs.Bool("admin", false, "an admin key (sees everything)")
	sp := fs.String("service-provider", "", "a key of this service provider sid")
	account := fs.String("account", "", "a key of this account sid")
	expires := fs.Duration("expires-in", 0, "the key expires after this long (0: never)")
	if err := fs.ParseArgs(args[1:]); err != nil {
		return err
	}
	n := 0
	for _, set := range []bool{*admin, *sp != "", *account != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		fs.Usage()
		return errors.New("give exactly one of --admin, --service-provider SID, --account SID")
	}
	k := store.APIKey{ServiceProviderSID: *sp, AccountSID: *account}
	if *expires < 0 {
		return errors.New("--expires-in must be positive")
	}
	if *expires > 0 {
		t := time.Now().Add(*expires).UTC()
		k.ExpiresAt = &t
	}
	db, err := cli.OpenDB(ctx, c, false, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	k, token, err := db.CreateAPIKey(ctx, k)
	if err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	fmt.Fprintln(stdout, token)
	fmt.Fprintf(stderr, "created %s key %s\n", k.Scope, k.SID)
	return nil
}
