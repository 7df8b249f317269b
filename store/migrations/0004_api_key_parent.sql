-- A key minted through the API by another key (or by a dashboard session,
-- which acts as its key) records that key as its parent. Deleting the
-- parent deletes its children, and theirs (ON DELETE CASCADE follows the
-- chain), with their dashboard sessions; api_keys_notify fires for every
-- deleted row, so other processes end the children's streams too.
-- Keys made before this migration have no parent recorded.
ALTER TABLE api_keys ADD COLUMN parent_key_sid uuid
    CONSTRAINT api_keys_parent_key_sid_fkey REFERENCES api_keys ON DELETE CASCADE;
CREATE INDEX api_keys_parent_key_sid_idx ON api_keys (parent_key_sid);
