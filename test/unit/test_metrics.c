/* metrics (common/metrics.h) and its listener (common/metrics_http.h): the
 * text exposition escapes label values and help text, histogram buckets are
 * cumulative with +Inf = _count, registration is idempotent and refuses a
 * second shape, collectors run before each render, a family stops growing
 * at its series limit, and the listener answers GET /metrics (404
 * elsewhere, 405 for other methods). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_http.h"

static metrics_registry *reg_new(void)
{
    metrics_registry *r;
    terr err;
    assert_int_equal(metrics_registry_new(&r, &err), 0);
    return r;
}

static char *render(metrics_registry *r)
{
    char *text;
    size_t len;
    terr err;
    assert_int_equal(metrics_render(r, &text, &len, &err), 0);
    assert_int_equal(strlen(text), len);
    return text;
}

static void assert_contains(const char *text, const char *needle)
{
    if (!strstr(text, needle)) fail_msg("missing %s in:\n%s", needle, text);
}

static void test_label_values_and_help_are_escaped(void **state)
{
    metrics_registry *r = reg_new();
    metric *m = metrics_counter(r, "t_requests_total", "Requests; a \\ and a\nnewline.", 2,
                                (const char *[]){"route", "status"});
    metrics_add(m, (const char *[]){"a\"b\\c\nd", "200"}, 3);
    metrics_add(m, (const char *[]){"a\"b\\c\nd", "200"}, 1.5);
    char *text = render(r);
    assert_contains(text, "# HELP t_requests_total Requests; a \\\\ and a\\nnewline.\n");
    assert_contains(text, "# TYPE t_requests_total counter\n");
    assert_contains(text, "t_requests_total{route=\"a\\\"b\\\\c\\nd\",status=\"200\"} 4.5\n");
    free(text);
    metrics_registry_free(r);
}

static void test_histogram_buckets_are_cumulative_and_inf_is_the_count(void **state)
{
    metrics_registry *r = reg_new();
    static const double b[] = {0.1, 1, 10};
    metric *h = metrics_histogram(r, "t_op_seconds", "Op.", 1, (const char *[]){"op"}, b, 3);
    const char *op[] = {"pause"};
    metrics_observe(h, op, 0.05);
    metrics_observe(h, op, 0.1); /* on the bound: le is inclusive */
    metrics_observe(h, op, 0.5);
    metrics_observe(h, op, 20);
    char *text = render(r);
    assert_contains(text, "# TYPE t_op_seconds histogram\n");
    assert_contains(text, "t_op_seconds_bucket{op=\"pause\",le=\"0.1\"} 2\n");
    assert_contains(text, "t_op_seconds_bucket{op=\"pause\",le=\"1\"} 3\n");
    assert_contains(text, "t_op_seconds_bucket{op=\"pause\",le=\"10\"} 3\n");
    assert_contains(text, "t_op_seconds_bucket{op=\"pause\",le=\"+Inf\"} 4\n");
    assert_contains(text, "t_op_seconds_sum{op=\"pause\"} 20.65\n");
    assert_contains(text, "t_op_seconds_count{op=\"pause\"} 4\n");
    free(text);
    metrics_registry_free(r);
}

static void test_registration_is_idempotent_and_refuses_another_shape(void **state)
{
    metrics_registry *r = reg_new();
    metric *a = metrics_gauge(r, "t_depth", "Depth.", 0, NULL);
    assert_non_null(a);
    assert_ptr_equal(metrics_gauge(r, "t_depth", "Depth.", 0, NULL), a);
    assert_null(metrics_counter(r, "t_depth", "Depth.", 0, NULL));
    assert_null(metrics_gauge(r, "t_depth", "Depth.", 1, (const char *[]){"host"}));
    assert_null(metrics_gauge(r, "bad name", "x", 0, NULL));
    assert_null(metrics_gauge(r, "t_le", "x", 1, (const char *[]){"le"}));
    static const double unsorted[] = {1, 0.5};
    assert_null(metrics_histogram(r, "t_h", "x", 0, NULL, unsorted, 2));
    /* Updates on a NULL family or of the wrong kind do nothing. */
    metrics_add(NULL, NULL, 1);
    metrics_add(a, NULL, 1);
    metrics_set(a, NULL, 7);
    metrics_set(a, NULL, 2);
    char *text = render(r);
    assert_contains(text, "\nt_depth 2\n");
    free(text);
    metrics_registry_free(r);
}

static void test_counter_ignores_negative_increments(void **state)
{
    metrics_registry *r = reg_new();
    metric *c = metrics_counter(r, "t_total", "T.", 0, NULL);
    metrics_add(c, NULL, 2);
    metrics_add(c, NULL, -5);
    char *text = render(r);
    assert_contains(text, "\nt_total 2\n");
    free(text);
    metrics_registry_free(r);
}

static void collect(void *ctx, metrics_registry *r)
{
    int *calls = ctx;
    (*calls)++;
    metric *g = metrics_gauge(r, "t_sandboxes", "Sandboxes.", 1, (const char *[]){"state"});
    metrics_clear(g);
    metrics_set(g, (const char *[]){*calls == 1 ? "running" : "paused"}, *calls);
}

static void test_collectors_run_before_each_render_and_clear_drops_old_series(void **state)
{
    metrics_registry *r = reg_new();
    int calls = 0;
    terr err;
    assert_int_equal(metrics_add_collector(r, collect, &calls, &err), 0);
    char *text = render(r);
    assert_contains(text, "t_sandboxes{state=\"running\"} 1\n");
    free(text);
    text = render(r);
    assert_contains(text, "t_sandboxes{state=\"paused\"} 2\n");
    assert_null(strstr(text, "running"));
    free(text);
    assert_int_equal(calls, 2);
    metrics_registry_free(r);
}

static void test_a_family_stops_growing_at_its_series_limit(void **state)
{
    metrics_registry *r = reg_new();
    metric *c = metrics_counter(r, "t_by_id_total", "T.", 1, (const char *[]){"id"});
    char id[32];
    for (int i = 0; i < METRICS_MAX_SERIES + 5; i++) {
        snprintf(id, sizeof id, "x%d", i);
        metrics_add(c, (const char *[]){id}, 1);
    }
    char *text = render(r);
    snprintf(id, sizeof id, "{id=\"x%d\"}", METRICS_MAX_SERIES - 1);
    assert_contains(text, id);
    snprintf(id, sizeof id, "{id=\"x%d\"}", METRICS_MAX_SERIES);
    assert_null(strstr(text, id));
    assert_contains(text, "torpor_metrics_series_dropped_total{metric=\"t_by_id_total\"} 5\n");
    free(text);
    metrics_registry_free(r);
}

/* One HTTP/1.0 exchange with 127.0.0.1:port; returns the whole answer. */
static char *http_get(int port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while ((n = read(fd, buf + len, cap - len - 1)) > 0) len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_listener_serves_metrics_and_nothing_else(void **state)
{
    metrics_registry *r = reg_new();
    metrics_add(metrics_counter(r, "t_hits_total", "Hits.", 0, NULL), NULL, 7);
    metrics_http *h;
    terr err;
    assert_true(metrics_http_addr_off("off"));
    assert_false(metrics_http_addr_off("127.0.0.1:0"));
    assert_int_equal(metrics_http_start("127.0.0.1:0", r, &h, &err), 0);
    int port = metrics_http_port(h);
    assert_true(port > 0);
    char *ans = http_get(port, "GET /metrics HTTP/1.0\r\n\r\n");
    assert_true(strncmp(ans, "HTTP/1.0 200", 12) == 0 || strncmp(ans, "HTTP/1.1 200", 12) == 0);
    assert_contains(ans, "text/plain; version=0.0.4");
    assert_contains(ans, "\nt_hits_total 7\n");
    free(ans);
    ans = http_get(port, "GET /other HTTP/1.0\r\n\r\n");
    assert_contains(ans, " 404 ");
    free(ans);
    ans = http_get(port, "POST /metrics HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    assert_contains(ans, " 405 ");
    free(ans);
    metrics_http *h2;
    assert_int_equal(metrics_http_start("not-an-address", r, &h2, &err), -1);
    assert_null(h2);
    metrics_http_stop(h);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_values_and_help_are_escaped),
        cmocka_unit_test(test_histogram_buckets_are_cumulative_and_inf_is_the_count),
        cmocka_unit_test(test_registration_is_idempotent_and_refuses_another_shape),
        cmocka_unit_test(test_counter_ignores_negative_increments),
        cmocka_unit_test(test_collectors_run_before_each_render_and_clear_drops_old_series),
        cmocka_unit_test(test_a_family_stops_growing_at_its_series_limit),
        cmocka_unit_test(test_listener_serves_metrics_and_nothing_else),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
