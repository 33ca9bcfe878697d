-- 0003_api_key_usage: when each key was last used and whether it is revoked
-- (`torpor-cp keys list` / `keys revoke`). last_used_at is written at most
-- once a minute per key (see controlplane/auth.c); a revoked key
-- authenticates nothing from the moment revoked_at is set (no cache).
-- Keys made before this migration keep their 8-character prefix; new keys
-- store 12 characters ("tpk_" + 8 hex digits).
ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN revoked_at TIMESTAMPTZ;
CREATE INDEX api_keys_prefix_idx ON api_keys (key_prefix);
