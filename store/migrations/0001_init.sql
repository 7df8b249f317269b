-- 0001_init: service providers, accounts, API keys, SIP clients, dashboard
-- sessions, and the triggers that tell running processes about changes.

CREATE TABLE service_providers (
    service_provider_sid uuid PRIMARY KEY,
    name                 text NOT NULL CHECK (name <> ''),
    description          text NOT NULL DEFAULT '',
    CONSTRAINT service_providers_name_key UNIQUE (name)
);

CREATE TABLE accounts (
    account_sid          uuid PRIMARY KEY,
    -- RESTRICT: a provider with accounts cannot be deleted by accident.
    service_provider_sid uuid NOT NULL
        CONSTRAINT accounts_service_provider_sid_fkey
        REFERENCES service_providers ON DELETE RESTRICT,
    name                 text NOT NULL CHECK (name <> ''),
    -- NULL (not '') when the account has no realm, so UNIQUE ignores it.
    -- Lower-case because SIP realms are host names and the SBC's Redis keys
    -- use the lower-cased realm.
    sip_realm            text
        CONSTRAINT accounts_sip_realm_check CHECK (sip_realm <> '' AND sip_realm = lower(btrim(sip_realm))),
    CONSTRAINT accounts_sip_realm_key UNIQUE (sip_realm)
);
CREATE INDEX accounts_service_provider_sid_idx ON accounts (service_provider_sid);

-- The scope of a key follows from which sid is set: account_sid → account
-- (its provider is the account's, found by a join so that it can never
-- disagree), service_provider_sid → service_provider, neither → admin.
CREATE TABLE api_keys (
    api_key_sid          uuid PRIMARY KEY,
    -- SHA-256 of the token; the token itself is never stored.
    token_hash           bytea NOT NULL CHECK (length(token_hash) = 32),
    service_provider_sid uuid
        CONSTRAINT api_keys_service_provider_sid_fkey
        REFERENCES service_providers ON DELETE CASCADE,
    account_sid          uuid
        CONSTRAINT api_keys_account_sid_fkey
        REFERENCES accounts ON DELETE CASCADE,
    expires_at           timestamptz,
    last_used            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_keys_one_owner CHECK (service_provider_sid IS NULL OR account_sid IS NULL)
);
CREATE INDEX api_keys_service_provider_sid_idx ON api_keys (service_provider_sid);
CREATE INDEX api_keys_account_sid_idx ON api_keys (account_sid);

CREATE TABLE clients (
    client_sid                 uuid PRIMARY KEY,
    account_sid                uuid NOT NULL
        CONSTRAINT clients_account_sid_fkey
        REFERENCES accounts ON DELETE CASCADE,
    username                   text NOT NULL CHECK (char_length(username) BETWEEN 1 AND 64),
    -- AES-256-GCM: nonce || ciphertext || tag, bound to client_sid.
    password                   bytea NOT NULL,
    is_active                  boolean NOT NULL DEFAULT true,
    allow_direct_app_calling   boolean NOT NULL DEFAULT true,
    allow_direct_queue_calling boolean NOT NULL DEFAULT true,
    allow_direct_user_calling  boolean NOT NULL DEFAULT true
);
-- jambonz only checks uniqueness in application code (racy) and relies on a
-- case-insensitive MySQL collation; an index makes it a guarantee.
CREATE UNIQUE INDEX clients_account_username_key ON clients (account_sid, lower(username));

CREATE TABLE sessions (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    -- A session acts with the key that created it and dies with it.
    api_key_sid uuid NOT NULL
        CONSTRAINT sessions_api_key_sid_fkey
        REFERENCES api_keys ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_api_key_sid_idx ON sessions (api_key_sid);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Change notifications. NOTIFY is delivered at commit (never for a rolled-back
-- transaction) and identical notifications in one transaction are merged, so
-- a bulk change of one account costs one reload.
--
-- presencehub_account carries an account_sid: reload that account's realm and
-- clients, forget its cached row.
-- presencehub_auth carries nothing useful: forget cached keys and sessions.

CREATE FUNCTION presencehub_notify_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('presencehub_account', OLD.account_sid::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('presencehub_account', NEW.account_sid::text);
    END IF;
    -- An account-scoped key's provider is the account's: moving the account
    -- changes what its keys may see.
    IF TG_OP = 'UPDATE' AND OLD.service_provider_sid IS DISTINCT FROM NEW.service_provider_sid THEN
        PERFORM pg_notify('presencehub_auth', 'accounts');
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION presencehub_notify_client() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('presencehub_account', OLD.account_sid::text);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('presencehub_account', NEW.account_sid::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION presencehub_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('presencehub_auth', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION presencehub_notify_account();
CREATE TRIGGER clients_notify AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION presencehub_notify_client();
-- Not on last_used: it changes once a minute per key in use and says nothing
-- about who may authenticate. New keys need no notification either: their
-- token was unknown until now, so no cache can hold it.
CREATE TRIGGER api_keys_notify AFTER DELETE OR UPDATE OF token_hash, service_provider_sid, account_sid, expires_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION presencehub_notify_auth();
CREATE TRIGGER sessions_notify AFTER DELETE OR UPDATE ON sessions
    FOR EACH ROW EXECUTE FUNCTION presencehub_notify_auth();
