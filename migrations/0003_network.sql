-- 0003_network: each sandbox's egress policy (docs/network.md) and whether a
-- call to it while paused resumes it (auto_resume, docs/api.md).
-- network is the REST object {"egress","allow","deny"}, stored canonical.
ALTER TABLE sandboxes ADD COLUMN network JSONB NOT NULL
    DEFAULT '{"egress": "allow", "allow": [], "deny": []}'::jsonb;
ALTER TABLE sandboxes ADD COLUMN auto_resume BOOLEAN NOT NULL DEFAULT false;
