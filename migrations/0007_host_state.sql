-- 0007_host_state (issue 11): each host's state as the reconcilers see it,
-- what its agent last reported about capacity, and an operator's memory cap;
-- API keys get a role.
--   state: ready (answers), unreachable (HOST_UNREACHABLE_FAILURES
--   consecutive probes failed), draining (set by `torpor-cp hosts drain`;
--   answers do not make it ready again). Only ready hosts get new sandboxes.
--   last_seen: the last answer of its agent; failures: consecutive failed
--   probes since then.
--   max_memory_mb: guest memory the scheduler may place on it (NULL = what
--   the agent reports as its RAM).
ALTER TABLE hosts ADD COLUMN state TEXT NOT NULL DEFAULT 'ready'
    CHECK (state IN ('ready', 'unreachable', 'draining'));
ALTER TABLE hosts ADD COLUMN last_seen TIMESTAMPTZ;
ALTER TABLE hosts ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN max_memory_mb BIGINT CHECK (max_memory_mb IS NULL OR max_memory_mb >= 0);
ALTER TABLE hosts ADD COLUMN memory_total_mb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN memory_reserved_mb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN disk_free_mb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN vcpus INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN templates TEXT[] NOT NULL DEFAULT '{}';

-- member: its team's sandboxes; admin: also /v1/hosts and moves of any
-- team's sandbox.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin'));

-- moving: a paused sandbox whose files are being copied to another host
-- (POST /v1/sandboxes/{id}/move, hosts drain); host_id stays the source until
-- the target has committed them, then switches in one statement.
ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_status_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_status_check
    CHECK (status IN ('pending', 'running', 'pausing', 'paused', 'resuming', 'stopped', 'error', 'moving'));
