/* qemu_watch: one thread that notices QEMU processes exiting on their own
 * (killed from outside, crashed) so that a dead VM's in-flight guest calls
 * fail at once and the child is reaped without anyone polling it. The same
 * thread runs the idle trim (qemu_trim.c): it already holds every running
 * VM and a pidfd of its process.
 *
 * Each watched VM is held by a reference and watched through a dup of its
 * pidfd (the owner may close its own pidfd at any time). When the process
 * exits, the entry goes away and the reference is dropped. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "mono_time.h"
#include "qemu_internal.h"

typedef struct watch_entry {
    qemu_vm *vm;
    int fd; /* our dup of the VM's pidfd */
    struct watch_entry *next;
} watch_entry;

struct qemu_watch {
    int epfd;
    int stopfd;
    pthread_t thread;
    pthread_mutex_t mu;
    watch_entry *entries;
    int idle_trim_ms;   /* 0 = no trim */
    bool trim_disabled; /* the kernel or our privileges cannot do it */
};

/* How often the watch thread looks for idle VMs to trim. */
#define TRIM_SCAN_MS 1000

/* The process behind e has exited. */
static void handle_exit(watch_entry *e)
{
    qemu_vm *v = e->vm;
    pthread_mutex_lock(&v->mu);
    if (v->busy) {
        /* A pause/destroy owns the process and will reap it; just make the
         * guest calls fail now. */
        if (v->ch) guest_channel_close(v->ch, "the VM process exited");
    } else if (v->state == QVM_RUNNING) {
        qemu_proc_poll(&v->inst.proc);
        v->state = QVM_DEAD;
        if (v->ch) {
            guest_channel_close(v->ch, "the VM process exited");
            guest_channel_unref(v->ch);
            v->ch = NULL;
        }
        log_warn("event=vm_exited sandbox_id=%s pid=%d", v->base.sandbox_id, (int)v->inst.proc.pid);
    }
    pthread_mutex_unlock(&v->mu);
}

/* Trims e's VM if it is running, not in a lifecycle call, has no guest call
 * in flight and none for idle_trim_ms, and was not trimmed since. */
static void maybe_trim(qemu_watch *w, watch_entry *e, long long now)
{
    qemu_vm *v = e->vm;
    pthread_mutex_lock(&v->mu);
    bool due = v->state == QVM_RUNNING && !v->busy && v->calls == 0 && !v->trimmed &&
               now - v->last_call_ms >= w->idle_trim_ms;
    if (due) v->trimmed = true;
    pid_t pid = v->inst.proc.pid;
    pthread_mutex_unlock(&v->mu);
    if (!due) return;
    /* Outside the VM lock: a call or pause may start meanwhile; trimming
     * never changes guest memory, so that is harmless. Our pidfd lives as
     * long as the entry, so a reused pid can never be trimmed by mistake. */
    long long advised;
    bool unsupported;
    terr err = {""};
    long long t0 = mono_ms();
    if (qemu_trim_vm(pid, e->fd, &advised, &unsupported, &err) < 0) {
        if (unsupported) {
            w->trim_disabled = true;
            char q[LOG_QUOTE_MAX];
            log_warn("event=idle_trim_disabled sandbox_id=%s error=\"%s\"", v->base.sandbox_id,
                     log_quote(err.msg, q, sizeof q));
        } else {
            char q[LOG_QUOTE_MAX];
            log_info("event=idle_trim_failed sandbox_id=%s error=\"%s\"", v->base.sandbox_id,
                     log_quote(err.msg, q, sizeof q));
        }
        return;
    }
    log_debug("event=idle_trim sandbox_id=%s pid=%d bytes=%lld duration_ms=%lld",
              v->base.sandbox_id, (int)pid, advised, mono_ms() - t0);
}

static void trim_idle(qemu_watch *w)
{
    if (!w->idle_trim_ms || w->trim_disabled) return;
    /* Only this thread removes entries; others only push at the head, so
     * the list from this head on stays valid without the lock. */
    pthread_mutex_lock(&w->mu);
    watch_entry *head = w->entries;
    pthread_mutex_unlock(&w->mu);
    long long now = mono_ms();
    for (watch_entry *e = head; e && !w->trim_disabled; e = e->next) maybe_trim(w, e, now);
}

static void *watch_main(void *arg)
{
    qemu_watch *w = arg;
    long long next_scan = mono_ms() + TRIM_SCAN_MS;
    for (;;) {
        struct epoll_event evs[16];
        int timeout = -1;
        if (w->idle_trim_ms && !w->trim_disabled) {
            long long left = next_scan - mono_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        int n = epoll_wait(w->epfd, evs, 16, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("event=watch_failed error=\"%s\"", strerror(errno));
            return NULL;
        }
        if (w->idle_trim_ms && mono_ms() >= next_scan) {
            trim_idle(w);
            next_scan = mono_ms() + TRIM_SCAN_MS;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) return NULL; /* stop */
            watch_entry *e = evs[i].data.ptr;
            pthread_mutex_lock(&w->mu);
            for (watch_entry **pp = &w->entries; *pp; pp = &(*pp)->next)
                if (*pp == e) {
                    *pp = e->next;
                    break;
                }
            epoll_ctl(w->epfd, EPOLL_CTL_DEL, e->fd, NULL);
            pthread_mutex_unlock(&w->mu);
            handle_exit(e);
            close(e->fd);
            runtime_vm_unref(&e->vm->base);
            free(e);
        }
    }
}

int qemu_watch_start(qemu_watch **out, int idle_trim_ms, terr *err)
{
    qemu_watch *w = calloc(1, sizeof *w);
    if (!w) return terr_set(err, "out of memory");
    w->idle_trim_ms = idle_trim_ms > 0 ? idle_trim_ms : 0;
    pthread_mutex_init(&w->mu, NULL);
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->stopfd = eventfd(0, EFD_CLOEXEC);
    if (w->epfd < 0 || w->stopfd < 0) {
        int e = errno;
        if (w->epfd >= 0) close(w->epfd);
        if (w->stopfd >= 0) close(w->stopfd);
        free(w);
        return terr_set(err, "epoll/eventfd: %s", strerror(e));
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->stopfd, &ev);
    int e = pthread_create(&w->thread, NULL, watch_main, w);
    if (e) {
        close(w->epfd);
        close(w->stopfd);
        free(w);
        return terr_set(err, "pthread_create: %s", strerror(e));
    }
    *out = w;
    return 0;
}

int qemu_watch_add(qemu_watch *w, qemu_vm *vm, terr *err)
{
    watch_entry *e = calloc(1, sizeof *e);
    if (!e) return terr_set(err, "out of memory");
    e->fd = fcntl(vm->inst.proc.pidfd, F_DUPFD_CLOEXEC, 0);
    if (e->fd < 0) {
        free(e);
        return terr_set(err, "dup pidfd: %s", strerror(errno));
    }
    e->vm = vm;
    runtime_vm_ref(&vm->base);
    /* The VM just came up (create, resume, re-attach): idle from now on. */
    pthread_mutex_lock(&vm->mu);
    vm->last_call_ms = mono_ms();
    vm->trimmed = false;
    pthread_mutex_unlock(&vm->mu);
    pthread_mutex_lock(&w->mu);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.ptr = e};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, e->fd, &ev) < 0) {
        int er = errno;
        pthread_mutex_unlock(&w->mu);
        close(e->fd);
        runtime_vm_unref(&vm->base);
        free(e);
        return terr_set(err, "epoll_ctl: %s", strerror(er));
    }
    e->next = w->entries;
    w->entries = e;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void qemu_watch_stop(qemu_watch *w)
{
    if (!w) return;
    uint64_t one = 1;
    ssize_t r = write(w->stopfd, &one, sizeof one);
    (void)r;
    pthread_join(w->thread, NULL);
    /* VMs still running stay running (a restarted agent re-attaches them);
     * only our references go. */
    watch_entry *e = w->entries;
    while (e) {
        watch_entry *next = e->next;
        close(e->fd);
        runtime_vm_unref(&e->vm->base);
        free(e);
        e = next;
    }
    close(w->epfd);
    close(w->stopfd);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
