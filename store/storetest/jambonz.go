package storetest

import (
	"context"
	"database/sql"
	"testing"
	"time"
)

// JambonzSchema creates the four jambonz tables presencehub mirrors, with
// jambonz's column names and MySQL types (jambonz-api-server
// db/jambones-sql.sql: the columns presencehub reads plus the NOT NULL ones
// an insert must fill). Foreign keys are as jambonz declares them.
var JambonzSchema = []string{
	`CREATE TABLE service_providers (
		service_provider_sid CHAR(36) NOT NULL UNIQUE,
		name VARCHAR(64) NOT NULL UNIQUE,
		description VARCHAR(255),
		root_domain VARCHAR(128) UNIQUE,
		registration_hook_sid CHAR(36),
		PRIMARY KEY (service_provider_sid)
	)`,
	`CREATE TABLE accounts (
		account_sid CHAR(36) NOT NULL UNIQUE,
		name VARCHAR(64) NOT NULL,
		sip_realm VARCHAR(132) UNIQUE,
		service_provider_sid CHAR(36) NOT NULL,
		registration_hook_sid CHAR(36),
		is_active BOOLEAN NOT NULL DEFAULT true,
		created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
		webhook_secret VARCHAR(36) NOT NULL,
		PRIMARY KEY (account_sid),
		FOREIGN KEY (service_provider_sid) REFERENCES service_providers (service_provider_sid)
	)`,
	`CREATE TABLE api_keys (
		api_key_sid CHAR(36) NOT NULL UNIQUE,
		token CHAR(36) NOT NULL UNIQUE,
		account_sid CHAR(36),
		service_provider_sid CHAR(36),
		expires_at TIMESTAMP NULL DEFAULT NULL,
		last_used TIMESTAMP NULL DEFAULT NULL,
		created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
		PRIMARY KEY (api_key_sid),
		FOREIGN KEY (account_sid) REFERENCES accounts (account_sid),
		FOREIGN KEY (service_provider_sid) REFERENCES service_providers (service_provider_sid)
	)`,
	`CREATE TABLE clients (
		client_sid CHAR(36) NOT NULL UNIQUE,
		account_sid CHAR(36) NOT NULL,
		is_active BOOLEAN NOT NULL DEFAULT 1,
		username VARCHAR(64),
		password VARCHAR(1024),
		allow_direct_app_calling BOOLEAN NOT NULL DEFAULT 1,
		allow_direct_queue_calling BOOLEAN NOT NULL DEFAULT 1,
		allow_direct_user_calling BOOLEAN NOT NULL DEFAULT 1,
		PRIMARY KEY (client_sid),
		FOREIGN KEY (account_sid) REFERENCES accounts (account_sid)
	)`,
}

// NewJambonzDatabase is NewMySQLDatabase with jambonz's tables created
// (JambonzSchema). It returns the DSN and an open handle for the test to
// insert rows with, as jambonz's api-server does.
func NewJambonzDatabase(t testing.TB) (string, *sql.DB) {
	t.Helper()
	return jambonzOn(t, NewMySQLDatabase(t))
}

// NewJambonzDatabaseOn is NewJambonzDatabase on a given server (such as one
// from StartMySQL).
func NewJambonzDatabaseOn(t testing.TB, adminDSN string) (string, *sql.DB) {
	t.Helper()
	return jambonzOn(t, NewMySQLDatabaseOn(t, adminDSN))
}

func jambonzOn(t testing.TB, dsn string) (string, *sql.DB) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ddl := range JambonzSchema {
		if _, err := db.ExecContext(ctx, ddl); err != nil {
			t.Fatalf("storetest: jambonz schema: %v", err)
		}
	}
	return dsn, db
}
