-- 0003_templates: custom templates (POST /v1/templates, docs/templates.md).
-- A template belongs to the team that built it; its name is unique per team.
-- id ("tpl-" + 16 hex) is the image name on the agents, so two teams' names
-- never collide on a host. `debian` and `minimal` are built in (no row).
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    team_id     UUID NOT NULL REFERENCES teams(id),
    name        TEXT NOT NULL,
    base        TEXT NOT NULL DEFAULT 'debian',
    packages    TEXT[] NOT NULL DEFAULT '{}',
    setup       TEXT NOT NULL DEFAULT '',
    status      TEXT NOT NULL DEFAULT 'building'
                CHECK (status IN ('building', 'ready', 'error')),
    digest      TEXT NOT NULL DEFAULT '',
    size_bytes  BIGINT NOT NULL DEFAULT 0,
    error       TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

-- Where each template's image is, and whether it is ready there: a sandbox
-- of a custom template is placed only on a host where it is ready.
CREATE TABLE template_hosts (
    template_id TEXT NOT NULL REFERENCES templates(id) ON DELETE CASCADE,
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    status      TEXT NOT NULL DEFAULT 'building'
                CHECK (status IN ('building', 'ready', 'error')),
    PRIMARY KEY (template_id, host_id)
);
