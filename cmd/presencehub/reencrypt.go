package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/presencehub/presencehub/cmd/internal/cli"
)

// cmdReencrypt moves every stored SIP client password to the current
// encryption key: after a rotation (--encryption-key-previous) or an upgrade
// from the format without key ids (--encryption-key-legacy).
func cmdReencrypt(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("presencehub reencrypt",
		"Re-encrypt every stored SIP client password with --encryption-key: those written with --encryption-key-previous\n"+
			"or in the format before key ids (--encryption-key-legacy). Idempotent; safe while serve runs (a password\n"+
			"changed meanwhile is left as its writer stored it). Exits 1 when some passwords did not decrypt.", getenv, stderr)
	c := cli.AddCommon(fs, false, true)
	batch := fs.EnvInt("batch", "PRESENCEHUB_REENCRYPT_BATCH", 500, "rows read and rewritten per transaction (1-10000)")
	if err := fs.ParseArgs(args); err != nil {
		return err
	}
	if *batch < 1 || *batch > 10_000 {
		return fmt.Errorf("--batch %d: want 1 to 10000", *batch)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	db, err := cli.OpenDB(ctx, c, true, log)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := db.Reencrypt(ctx, *batch)
	fmt.Fprintf(stdout, "key %s: %d passwords read, %d re-encrypted, %d already current, %d did not decrypt, %d changed meanwhile\n",
		db.EncryptionKeyID(), res.Scanned, res.Reencrypted, res.Current, res.Failed, res.Changed)
	if err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	if res.Failed > 0 {
		return fmt.Errorf("reencrypt: %d passwords did not decrypt with the configured keys (their client_sid is in the log): "+
			"set the key they were written with as --encryption-key-previous or --encryption-key-legacy and run it again, or give those clients new passwords", res.Failed)
	}
	return nil
}
