-- 0002_host_agent_id: the identity of the agent each host answered with.
-- '' = not recorded yet: the reconciler records the first agent_id it sees
-- and afterwards changes nothing for the host while a different agent answers
-- at its address (see docs/lifecycle.md); `torpor-cp hosts reset-identity`
-- clears it when a host's agent is replaced on purpose.
ALTER TABLE hosts ADD COLUMN agent_id TEXT NOT NULL DEFAULT '';
