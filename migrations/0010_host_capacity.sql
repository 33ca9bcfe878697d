-- The guest memory an agent admits in all (GetHostInfo.memory_capacity_mb:
-- its RAM x --memory-overcommit), so the scheduler places up to what the
-- agent would admit instead of the bare RAM. NULL: not reported (an older
-- agent); the scheduler then falls back to memory_total_mb.
ALTER TABLE hosts ADD COLUMN memory_capacity_mb BIGINT;
