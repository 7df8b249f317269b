-- One case-folding rule for SIP usernames, the hub's (hub.Fold): ASCII
-- letters lower-cased, every other character kept. lower() follows the
-- database's locale (under C.UTF-8 it folds 'Ë' and 'İ', under C it does
-- not) and Go's strings.ToLower differs from both, so the unique index, the
-- hub's lookup of a client's flags and the dashboard could disagree about
-- which usernames are the same.
--
-- Compatible with existing rows: two names equal under this rule differ
-- only in ASCII case, which lower() folds in every locale but a Turkish one
-- ('I'), so the old index already kept them apart. (Under a Turkish locale a
-- pair like 'Ian'/'ian' makes this migration fail, in its transaction,
-- naming the index; rename one of the two clients and migrate again.)
CREATE FUNCTION fold_username(u text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT translate(u, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $$;

DROP INDEX clients_account_username_key;
CREATE UNIQUE INDEX clients_account_username_key ON clients (account_sid, fold_username(username));
