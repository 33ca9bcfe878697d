/* Unit tests for controlplane/api_routes: the route table and its matcher
 * (literal segments, {id}, a trailing wildcard, 404 and 405 with Allow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "api_files.h"
#include "api_routes.h"

/* The real table's row for method + path must have want_pattern (NULL: no
 * row, 404) and the id segment want_id. */
static void route_is(const char *method, const char *path, const char *want_pattern,
                     const char *want_id)
{
    api_match m;
    const api_route *got = api_route_find(api_route_table, api_route_count, method, path, &m);
    if (!want_pattern) {
        if (got) fail_msg("%s %s: matched %s, want none", method, path, got->pattern);
        assert_int_equal(m.status, 404);
    } else {
        if (!got)
            fail_msg("%s %s: no route (status %d), want %s", method, path, m.status, want_pattern);
        assert_string_equal(got->pattern, want_pattern);
        assert_string_equal(got->method, method);
        assert_int_equal(m.status, 0);
    }
    assert_string_equal(m.id, want_id);
}

static void test_routes(void **state)
{
    route_is("GET", "/healthz", "/healthz", "");
    route_is("GET", "/v1/sandboxes", "/v1/sandboxes", "");
    route_is("GET", "/v1/sandboxes/sb-12ab", "/v1/sandboxes/{id}", "sb-12ab");
    route_is("POST", "/v1/sandboxes/sb-1/pause", "/v1/sandboxes/{id}/pause", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/resume", "/v1/sandboxes/{id}/resume", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/ping", "/v1/sandboxes/{id}/ping", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/timeout", "/v1/sandboxes/{id}/timeout", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/exec", "/v1/sandboxes/{id}/exec", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/files/write", "/v1/sandboxes/{id}/files/write", "sb-1");
    route_is("POST", "/v1/sandboxes/sb-1/files/read", "/v1/sandboxes/{id}/files/read", "sb-1");
    route_is("PUT", "/v1/sandboxes/sb-1/files/content", "/v1/sandboxes/{id}/files/content", "sb-1");
    route_is("GET", "/v1/sandboxes/sb-1/files/content", "/v1/sandboxes/{id}/files/content", "sb-1");
    route_is("GET", "/v1/sandboxes/sb-1/files", "/v1/sandboxes/{id}/files", "sb-1");

    route_is("GET", "/v1/openapi.json", "/v1/openapi.json", "");
    route_is("GET", "/", "/", "");
    route_is("GET", "/ui/dashboard.js", "/ui/*", "");

    route_is("GET", "/ui/", NULL, "");
    route_is("GET", "/index.html", NULL, "");
    route_is("GET", "/v1/sandboxes/", NULL, "");
    route_is("GET", "/v1/sandboxesx", NULL, "");
    route_is("GET", "/v1/sandboxes/sb-1/", NULL, "");
    route_is("GET", "/v1/sandboxes/sb-1/files/", NULL, "");
    route_is("POST", "/v1/sandboxes/sb-1/pause/x", NULL, "");
    route_is("GET", "/v1/sandboxes/sb%201", NULL, "");
    route_is("GET", "/v1/sandboxes/..", "/v1/sandboxes/{id}",
             ".."); /* harmless: no such sandbox -> 404 */
    route_is("GET", "/v1/sandboxes/../x", NULL, "");
    route_is("GET", "/healthz/", NULL, "");
    char longp[200] = "/v1/sandboxes/";
    memset(longp + strlen(longp), 'a', 100);
    route_is("GET", longp, NULL, "");
    api_match m;
    assert_null(api_route_find(api_route_table, api_route_count, "GET", NULL, &m));
    assert_int_equal(m.status, 404);
}

/* A known path with a method it does not serve is 405, and Allow lists the
 * methods of every row with that path. */
static void allow_is(const char *method, const char *path, const char *want_allow)
{
    api_match m;
    assert_null(api_route_find(api_route_table, api_route_count, method, path, &m));
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, want_allow);
}

static void test_methods(void **state)
{
    allow_is("POST", "/healthz", "GET");
    allow_is("DELETE", "/v1/sandboxes", "GET, POST");
    allow_is("POST", "/v1/sandboxes/sb-1", "GET, DELETE");
    allow_is("PUT", "/v1/sandboxes/sb-1", "GET, DELETE");
    allow_is("GET", "/v1/sandboxes/sb-1/exec", "POST");
    allow_is("GET", "/v1/sandboxes/sb-1/ping", "POST");
    allow_is("POST", "/v1/sandboxes/sb-1/files", "GET");
    allow_is("DELETE", "/v1/sandboxes/sb-1/files/content", "PUT, GET");
    allow_is("HEAD", "/healthz", "GET"); /* as before: HEAD is not GET */
}

static void handler_a(api_request *r) { (void)r; }
static void handler_b(api_request *r) { (void)r; }

/* A trailing "*" matches the rest of the path (not nothing), after {id}
 * too; a row with method NULL serves any method. */
static void test_wildcard_and_any_method(void **state)
{
    static const api_route t[] = {
        {"GET", "/v1/sandboxes/{id}/port/*", handler_a, 0, NULL, API_AUTH_KEY, API_RUN_WORKER},
        {NULL, "/proxy/*", handler_b, 0, NULL, API_AUTH_NONE, API_RUN_LONG},
    };
    api_match m;
    const api_route *r = api_route_find(t, 2, "GET", "/v1/sandboxes/sb-9/port/8080/a/b?c", &m);
    assert_ptr_equal(r, &t[0]);
    assert_string_equal(m.id, "sb-9");
    assert_string_equal(m.rest, "8080/a/b?c");
    assert_null(api_route_find(t, 2, "GET", "/v1/sandboxes/sb-9/port/", &m));
    assert_int_equal(m.status, 404);
    assert_null(api_route_find(t, 2, "POST", "/v1/sandboxes/sb-9/port/1", &m));
    assert_int_equal(m.status, 405);
    assert_string_equal(m.allow, "GET");
    assert_ptr_equal(api_route_find(t, 2, "PATCH", "/proxy/x", &m), &t[1]);
    assert_string_equal(m.rest, "x");
    assert_string_equal(m.id, "");
    assert_ptr_equal(api_route_find(t, 2, "GET", "/proxy/x/y", &m), &t[1]);
}

/* Every row is complete, and no two rows claim the same method + pattern. */
static void test_table_rows_are_complete_and_unique(void **state)
{
    for (size_t i = 0; i < api_route_count; i++) {
        const api_route *r = &api_route_table[i];
        assert_non_null(r->pattern);
        assert_non_null(r->handler);
        assert_true(r->stream || r->body_limit > 0);
        for (size_t j = i + 1; j < api_route_count; j++) {
            const api_route *o = &api_route_table[j];
            bool same_method = !r->method || !o->method || strcmp(r->method, o->method) == 0;
            if (same_method && strcmp(r->pattern, o->pattern) == 0)
                fail_msg("duplicate row %s", r->pattern);
        }
    }
    /* The files/write row carries the larger limit (base64 inflates 4/3). */
    api_match m;
    const api_route *w = api_route_find(api_route_table, api_route_count, "POST",
                                        "/v1/sandboxes/sb-1/files/write", &m);
    assert_int_equal(w->body_limit, API_FILES_BODY_LIMIT);
    const api_route *c =
        api_route_find(api_route_table, api_route_count, "POST", "/v1/sandboxes", &m);
    assert_int_equal(c->body_limit, API_BODY_LIMIT);
    assert_int_equal(c->run, API_RUN_LONG);
}

/* Only /healthz runs on the I/O thread (liveness, never behind a worker),
 * and such a row takes no key and no body. */
static void test_only_healthz_runs_on_the_io_thread(void **state)
{
    size_t n = 0;
    for (size_t i = 0; i < api_route_count; i++) {
        const api_route *r = &api_route_table[i];
        if (r->run != API_RUN_IO_THREAD) continue;
        n++;
        assert_string_equal(r->pattern, "/healthz");
        assert_string_equal(r->method, "GET");
        assert_int_equal(r->auth, API_AUTH_NONE);
        assert_null(r->stream);
    }
    assert_int_equal(n, 1);
    api_match m;
    const api_route *ready = api_route_find(api_route_table, api_route_count, "GET", "/readyz", &m);
    assert_int_equal(ready->run, API_RUN_WORKER); /* it queries PostgreSQL */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_wildcard_and_any_method),
        cmocka_unit_test(test_table_rows_are_complete_and_unique),
        cmocka_unit_test(test_only_healthz_runs_on_the_io_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
