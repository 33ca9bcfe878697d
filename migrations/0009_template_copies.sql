-- 0009_template_copies: a template image is built on one host and copied,
-- byte-identical, to the others (docs/templates.md, "Copies"). Each
-- (template, host) row says where the image is and in what state:
--   builder   the host that built it (its build log, its status while building)
--   status    building (the build) | copying | ready | error
--   digest    the sha256 of the image's root disk on that host: a sandbox of
--             the template is placed only on a host whose row is ready with
--             the template's digest
--   attempts  failed copies so far (the retry waits longer each time)
--   updated_at when the status last changed (a copy not settled within its
--             deadline is taken over)
ALTER TABLE template_hosts DROP CONSTRAINT IF EXISTS template_hosts_status_check;
ALTER TABLE template_hosts ADD CONSTRAINT template_hosts_status_check
    CHECK (status IN ('building', 'copying', 'ready', 'error'));
ALTER TABLE template_hosts ADD COLUMN builder BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE template_hosts ADD COLUMN digest TEXT NOT NULL DEFAULT '';
ALTER TABLE template_hosts ADD COLUMN error TEXT NOT NULL DEFAULT '';
ALTER TABLE template_hosts ADD COLUMN attempts INT NOT NULL DEFAULT 0;
ALTER TABLE template_hosts ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();
-- Every row before this migration is its template's build host.
UPDATE template_hosts SET builder = true;
UPDATE template_hosts th SET digest = t.digest
    FROM templates t WHERE t.id = th.template_id AND th.status = 'ready';
CREATE UNIQUE INDEX template_hosts_one_builder ON template_hosts (template_id) WHERE builder;
-- A removed host takes its rows along (every host gets copies now, so the
-- old plain reference would keep `hosts remove` from ever succeeding); a
-- template whose build host went is still served from its copies.
ALTER TABLE template_hosts DROP CONSTRAINT IF EXISTS template_hosts_host_id_fkey;
ALTER TABLE template_hosts ADD CONSTRAINT template_hosts_host_id_fkey
    FOREIGN KEY (host_id) REFERENCES hosts(id) ON DELETE CASCADE;
