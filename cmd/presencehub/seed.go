package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/presencehub/presencehub/cmd/internal/cli"
	"github.com/presencehub/presencehub/store"
)

// Demo data created by "presencehub seed".
const (
	demoSPName      = "Demo Provider"
	demoAccountName = "Demo Account"
	demoRealm       = "demo.presencehub.local"
)

var demoClients = []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}

func cmdSeed(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("presencehub seed", "Create the demo service provider, account (realm "+demoRealm+") and SIP clients if missing, and a new admin key.\nPrints shell-style lines: account_sid=…, realm=…, admin_key=….", getenv, stderr)
	c := cli.AddCommon(fs, false, true)
	realm := fs.String("realm", demoRealm, "SIP realm of the demo account")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	db, err := cli.OpenDB(ctx, c, true, nil) // it stores SIP client passwords
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	acct, err := db.AccountByRealm(ctx, *realm)
	if errors.Is(err, store.ErrNotFound) {
		sp, err := findOrCreateSP(ctx, db)
		if err != nil {
			return err
		}
		acct, err = db.CreateAccount(ctx, store.Account{Name: demoAccountName, ServiceProviderSID: sp.SID, SIPRealm: *realm})
		if err != nil {
			return fmt.Errorf("create demo account: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("look up demo account: %w", err)
	}
	for i, name := range demoClients {
		_, err := db.CreateClient(ctx, store.Client{
			AccountSID: acct.SID, Username: name, IsActive: true,
			AllowDirectAppCalling: true, AllowDirectQueueCalling: i%2 == 0, AllowDirectUserCalling: true,
		}, "secret-"+name)
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("create demo client %s: %w", name, err)
		}
	}
	_, token, err := db.CreateAPIKey(ctx, store.APIKey{})
	if err != nil {
		return fmt.Errorf("create admin key: %w", err)
	}
	fmt.Fprintf(stdout, "account_sid=%s\nrealm=%s\nadmin_key=%s\n", acct.SID, acct.SIPRealm, token)
	return nil
}

func findOrCreateSP(ctx context.Context, db *store.DB) (store.ServiceProvider, error) {
	sps, err := db.ServiceProviders(ctx)
	if err != nil {
		return store.ServiceProvider{}, fmt.Errorf("list service providers: %w", err)
	}
	for _, sp := range sps {
		if sp.Name == demoSPName {
			return sp, nil
		}
	}
	sp, err := db.CreateServiceProvider(ctx, store.ServiceProvider{Name: demoSPName, Description: "created by presencehub seed"})
	if err != nil {
		return sp, fmt.Errorf("create demo service provider: %w", err)
	}
	return sp, nil
}
