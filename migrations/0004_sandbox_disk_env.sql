-- 0003_sandbox_disk_env: per-sandbox root disk size and create-time env.
-- disk_mb: the root disk's size (templates with a root disk; 4096 for rows
-- made before it existed). env: {"NAME": "value"} given on create, applied
-- to every exec of the sandbox (an exec's own env wins); never echoed in the
-- REST Sandbox object, since it may hold secrets.
ALTER TABLE sandboxes ADD COLUMN disk_mb INT NOT NULL DEFAULT 4096
    CHECK (disk_mb BETWEEN 512 AND 65536);
ALTER TABLE sandboxes ADD COLUMN env JSONB NOT NULL DEFAULT '{}'::jsonb
    CHECK (jsonb_typeof(env) = 'object');
