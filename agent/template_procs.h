/* template_procs: the processes of a template build, found by their process
 * group and a marker entry ("KEY=VALUE") in their environment, so that what a
 * build left running after its agent died can be stopped by the next agent
 * without ever touching a process that is not the build's (a reused group
 * id carries no marker).
 *
 * Contract: reads /proc only; zombies do not count. */
#ifndef TORPOR_AGENT_TEMPLATE_PROCS_H
#define TORPOR_AGENT_TEMPLATE_PROCS_H

/* Live processes of group pgid whose environment holds marker (among its
 * first 64 KiB). */
int tproc_members(int pgid, const char *marker);

/* SIGTERM to the group (mmdebstrap then unmounts what it mounted in its
 * tree), SIGKILL to what is left after grace_ms. Nothing when no marked
 * member runs. Returns how many marked members there were. */
int tproc_stop_group(int pgid, const char *marker, int grace_ms);

#endif
