-- 0008_network: each sandbox's egress policy (docs/network.md) and whether a
-- call to it while paused resumes it (auto_resume, docs/api.md).
-- network is the REST object {"egress","allow","deny"}, stored canonical.
ALTER TABLE sandboxes ADD COLUMN network JSONB NOT NULL
    DEFAULT '{"egress": "allow", "allow": [], "deny": []}'::jsonb;
ALTER TABLE sandboxes ADD COLUMN auto_resume BOOLEAN NOT NULL DEFAULT false;
-- SHA-256 (hex) of the sandbox's access token (returned once, on create): it
-- authenticates the port proxy of this sandbox only. '' = none.
ALTER TABLE sandboxes ADD COLUMN access_token_hash TEXT NOT NULL DEFAULT '';
