-- 0004_registration_history_runs: when the history writer was recording.
--
-- One row per run of the writer (a process with --registration-history, or
-- the cluster replica holding the writer lease): from its first
-- reconciliation with the hub to its last heartbeat. Time covered by no run
-- (before history began, while no writer ran) has no data: the dashboard's
-- chart draws no line there. Intervals inside a run where changes were
-- dropped are in registration_history_gaps.
CREATE TABLE registration_history_runs (
    id         bigserial PRIMARY KEY,
    started_at timestamptz NOT NULL,
    alive_at   timestamptz NOT NULL,
    CHECK (started_at <= alive_at)
);
CREATE INDEX registration_history_runs_alive_idx ON registration_history_runs (alive_at);

-- History recorded before this table existed: one run from its first
-- session to now (the best that is known).
INSERT INTO registration_history_runs (started_at, alive_at)
SELECT m, GREATEST(m, now()) FROM (SELECT min(started_at) AS m FROM registration_sessions) s WHERE m IS NOT NULL;
