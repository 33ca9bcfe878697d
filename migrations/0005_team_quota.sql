-- 0003_team_quota: an optional quota per team (issue 10). NULL = unlimited,
-- the default; `torpor-cp teams set-quota` sets them. Counted over the
-- team's sandboxes that are not stopped/error (running + paused + in
-- transition); a create beyond either limit is refused with 429.
ALTER TABLE teams ADD COLUMN max_sandboxes INTEGER CHECK (max_sandboxes >= 0);
ALTER TABLE teams ADD COLUMN max_memory_mb BIGINT CHECK (max_memory_mb >= 0);
