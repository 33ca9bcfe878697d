-- 0001_init: teams, API keys, hosts and sandboxes.
-- Applied once by torpor-cp inside a transaction (see controlplane/migrate.c).

CREATE TABLE teams (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name       TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is stored; the key itself is shown once.
CREATE TABLE api_keys (
    id           UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    team_id      UUID NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    key_hash     TEXT NOT NULL UNIQUE,
    key_prefix   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE hosts (
    id         TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE sandboxes (
    id             TEXT PRIMARY KEY,
    team_id        UUID NOT NULL REFERENCES teams(id),
    host_id        TEXT NOT NULL REFERENCES hosts(id),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'running', 'pausing', 'paused',
                                     'resuming', 'stopped', 'error')),
    template       TEXT NOT NULL DEFAULT 'minimal',
    vcpus          INTEGER NOT NULL DEFAULT 1 CHECK (vcpus BETWEEN 1 AND 64),
    memory_mb      INTEGER NOT NULL DEFAULT 512 CHECK (memory_mb BETWEEN 64 AND 65536),
    timeout_sec    INTEGER NOT NULL DEFAULT 0 CHECK (timeout_sec BETWEEN 0 AND 2592000),
    error_message  TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at     TIMESTAMPTZ,
    last_active_at TIMESTAMPTZ,
    last_updated   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX sandboxes_team_created_idx ON sandboxes (team_id, created_at);
CREATE INDEX sandboxes_host_status_idx ON sandboxes (host_id, status);
