-- 0002_registration_history: registration sessions (registered → ended) and
-- the gaps where history is known to be incomplete.
--
-- Partitioned by day of ended_at. An open session has ended_at 'infinity'
-- and lives in registration_sessions_open, so retention (dropping whole
-- daily partitions, see store/history.go) never drops a session that is
-- still running; closing it moves the row into the partition of its end
-- day. The daily partitions are created ahead by the history writer.
CREATE SEQUENCE registration_sessions_id_seq;

CREATE TABLE registration_sessions (
    id          bigint NOT NULL DEFAULT nextval('registration_sessions_id_seq'),
    realm       text NOT NULL,
    -- The account that held the realm when the session was written; NULL
    -- when no account had it (such sessions are never answered).
    account_sid uuid,
    user_name   text NOT NULL,
    contact     text NOT NULL DEFAULT '',
    protocol    text NOT NULL DEFAULT '',
    proxy       text NOT NULL DEFAULT '',
    allow_direct_app_calling   smallint NOT NULL DEFAULT 0,
    allow_direct_queue_calling smallint NOT NULL DEFAULT 0,
    allow_direct_user_calling  smallint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL DEFAULT 'infinity',
    end_reason  text CHECK (end_reason IN ('unregistered', 'expired', 'replaced')),
    refreshes   integer NOT NULL DEFAULT 0,
    last_refresh timestamptz,
    -- The registration's own expiry (the SBC's expiryTime) as last seen.
    expires_at  timestamptz,
    -- The hub change that opened the session and the last one applied to
    -- it: writes are idempotent by (epoch, realm, seq).
    start_epoch text NOT NULL,
    start_seq   bigint NOT NULL,
    last_epoch  text NOT NULL,
    last_seq    bigint NOT NULL,
    CONSTRAINT registration_sessions_end CHECK ((ended_at = 'infinity') = (end_reason IS NULL))
) PARTITION BY RANGE (ended_at);

CREATE TABLE registration_sessions_open PARTITION OF registration_sessions
    FOR VALUES FROM ('infinity') TO (MAXVALUE);

-- RegistrationHistory: newest first per account, and per account and user.
CREATE INDEX registration_sessions_account_idx ON registration_sessions (account_sid, started_at DESC, id DESC);
CREATE INDEX registration_sessions_user_idx ON registration_sessions (account_sid, user_name, started_at DESC, id DESC);
-- Idempotent inserts: has this change already opened a session?
CREATE INDEX registration_sessions_start_idx ON registration_sessions (realm, start_epoch, start_seq);
-- The writer finds a user's open session by realm and name.
CREATE INDEX registration_sessions_open_user_idx ON registration_sessions_open (realm, user_name);

-- Intervals in which changes were not recorded (the writer's buffer
-- overflowed): history is incomplete from from_ts to to_ts.
CREATE TABLE registration_history_gaps (
    id        bigserial PRIMARY KEY,
    from_ts   timestamptz NOT NULL,
    to_ts     timestamptz NOT NULL,
    dropped   bigint NOT NULL,
    CHECK (from_ts <= to_ts)
);
CREATE INDEX registration_history_gaps_to_idx ON registration_history_gaps (to_ts);
