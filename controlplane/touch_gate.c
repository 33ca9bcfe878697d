#include "touch_gate.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox_model.h"

typedef struct slot {
    char id[SANDBOX_ID_MAX]; /* "" = empty */
    int64_t sent_ms;
} slot;

struct touch_gate {
    pthread_mutex_t mu;
    slot slots[TOUCH_GATE_SLOTS];
};

int touch_gate_new(touch_gate **out, terr *err)
{
    touch_gate *g = calloc(1, sizeof *g);
    if (!g) return terr_set(err, "out of memory");
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return 0;
}

void touch_gate_free(touch_gate *g)
{
    if (!g) return;
    pthread_mutex_destroy(&g->mu);
    free(g);
}

static slot *slot_of(touch_gate *g, const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) h = (h ^ *p) * 16777619u;
    return &g->slots[h % TOUCH_GATE_SLOTS];
}

bool touch_gate_due(touch_gate *g, const char *id, int64_t now_ms)
{
    if (!g || strlen(id) >= SANDBOX_ID_MAX) return true;
    pthread_mutex_lock(&g->mu);
    slot *s = slot_of(g, id);
    bool due = strcmp(s->id, id) != 0 || now_ms - s->sent_ms >= TOUCH_GATE_MS;
    if (due) {
        strcpy(s->id, id);
        s->sent_ms = now_ms;
    }
    pthread_mutex_unlock(&g->mu);
    return due;
}

void touch_gate_forget(touch_gate *g, const char *id)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    slot *s = slot_of(g, id);
    if (strcmp(s->id, id) == 0) s->id[0] = '\0';
    pthread_mutex_unlock(&g->mu);
}
