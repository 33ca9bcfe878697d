#!/usr/bin/env python3
"""The dashboard in headless Chromium against the real stack: a user opens
/, pastes team A's key, creates a sandbox (minimal template, 128 MiB) and
sees it `running`, runs a command and sees its stdout, stderr and exit code,
pauses it and sees `paused`, resumes it, sees an API error with its code,
and deletes it -- every click a real mouse event, every state also checked
through the REST API, and no script error or Content-Security-Policy
violation on the page. Screenshots: <build>/test-artifacts/dashboard-*.png.
Needs the Debian package chromium (scripts/install-deps); the browser is
driven over the DevTools protocol (test/e2e/cdp.py, stdlib only)."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402
from harness import BUILD_DIR, Stack, run_tests  # noqa: E402

ARTIFACTS = os.path.join(BUILD_DIR, "test-artifacts")
BOOT_TIMEOUT = 240  # create under TCG on a loaded machine
OP_TIMEOUT = 120


class DashboardStack(Stack):
    """The stack plus one browser shared by the tests, in order."""

    def __enter__(self):
        super().__enter__()
        try:
            self.browser = Browser(width=1280, height=860).__enter__()
        except BaseException:
            self.failed = True
            self.close()
            raise
        self.sandbox_id = None
        return self

    def close(self):
        b = getattr(self, "browser", None)
        if b is not None:
            if self.failed:
                try:
                    b.screenshot(os.path.join(ARTIFACTS, "dashboard-failure.png"))
                    print(f"dashboard: page problems: {b.problems()}")
                except Exception as e:  # noqa: BLE001
                    print(f"dashboard: no failure screenshot: {e}")
            b.close()
            self.browser = None
        super().close()


def js(value):
    return json.dumps(value)


def row(sid):
    return f'#sandbox-rows tr[data-id="{sid}"]'


def row_status(b, sid):
    return b.evaluate(f"(document.querySelector({js(row(sid))}) || {{dataset: {{}}}}).dataset.status || null")


def shot(b, name):
    path = b.screenshot(os.path.join(ARTIFACTS, f"dashboard-{name}.png"))
    print(f"     screenshot {path}")


def no_page_problems(b):
    b.pump(0.3)
    problems = b.problems()
    b.events.clear()  # each problem fails one test, the first that sees it
    assert not problems, f"the page reported problems: {problems}"


def test_page_asks_for_a_key(s):
    b = s.browser
    b.navigate(f"http://127.0.0.1:{s.http_port}/")
    b.wait_js("document.readyState === 'complete' && !!document.querySelector('#api-key')", 10, "the page")
    assert b.evaluate("document.querySelector('#login').hidden") is False
    assert b.evaluate("document.querySelector('#app').hidden") is True
    assert b.evaluate("document.title") == "Torpor — sandboxes"
    # The style sheet applied (CSP allows 'self'): the top bar is dark.
    bg = b.evaluate("getComputedStyle(document.querySelector('.topbar')).backgroundColor")
    assert bg == "rgb(29, 35, 48)", f"dashboard.css not applied (top bar background {bg})"
    shot(b, "login")
    no_page_problems(b)


def test_a_wrong_key_is_refused_with_its_code(s):
    b = s.browser
    b.type_text("#api-key", "tpk_" + "0" * 32)
    b.click("#key-save")
    text = b.wait_js("!document.querySelector('#error').hidden && document.querySelector('#error-text').textContent",
                     15, "the error banner")
    assert "401 unauthorized" in text, text
    assert b.evaluate("document.querySelector('#login').hidden") is False, "a refused key must go back to the form"
    assert b.evaluate("sessionStorage.getItem('torpor.apiKey')") is None


def test_pasting_the_key_shows_the_team_sandboxes(s):
    b = s.browser
    b.type_text("#api-key", s.key_a)
    b.click("#key-save")
    b.wait_js("document.querySelector('#live').classList.contains('ok')", 15, "the first poll")
    assert b.evaluate("document.querySelector('#login').hidden") is True
    assert b.evaluate("document.querySelector('#error').hidden") is True
    assert b.evaluate("sessionStorage.getItem('torpor.apiKey')") == s.key_a
    assert b.evaluate("document.querySelector('#empty').hidden") is False  # team A has none yet
    no_page_problems(b)


def test_create_shows_the_sandbox_running(s):
    b = s.browser
    b.type_text("#create-template", "minimal")
    b.type_text("#create-memory", "128")
    b.type_text("#create-timeout", "600")
    b.click("#create-submit")
    sid = b.wait_js("(() => { const r = document.querySelector('#sandbox-rows tr[data-status=\"running\"]');"
                    " return r && r.dataset.id; })()", BOOT_TIMEOUT, "a running sandbox row")
    s.sandbox_id = sid
    st, sb = s.request("GET", f"/v1/sandboxes/{sid}")
    assert st == 200 and sb["status"] == "running", (st, sb)
    assert sb["memory_mb"] == 128 and sb["template"] == "minimal" and sb["timeout_sec"] == 600, sb
    cells = b.evaluate(f"Array.from(document.querySelectorAll({js(row(sid) + ' td')})).map(c => c.textContent)")
    assert cells[0] == sid and cells[1] == "running" and cells[2] == "minimal" and cells[3] == "128 MiB", cells
    assert cells[4].endswith(" ago"), cells  # age
    # Auto-pause countdown from last_active_at + timeout_sec: under 10 minutes.
    assert cells[6].endswith("s") and cells[6][0].isdigit() and cells[6] != "never", cells
    shot(b, "running")
    no_page_problems(b)


def test_refreshes_keep_the_row_and_its_buttons(s):
    # A click is a press and a release on the same element: the 1 s repaint
    # and the 2 s poll must update the row in place, not replace it.
    b = s.browser
    sel = row(s.sandbox_id)
    b.evaluate(f"window.__row = document.querySelector({js(sel)});"
               f" window.__btn = document.querySelector({js(sel + ' button[data-action=pause]')}); true")
    polls = b.evaluate("document.querySelector('#live').textContent")
    b.wait_js(f"document.querySelector('#live').textContent !== {js(polls)}", 10, "a new poll")
    b.pump(1.2)
    assert b.evaluate(f"document.querySelector({js(sel)}) === window.__row"), "the row was replaced"
    assert b.evaluate(f"document.querySelector({js(sel + ' button[data-action=pause]')}) === window.__btn"), \
        "the pause button was replaced"


def test_exec_shows_stdout_stderr_and_exit_code(s):
    b = s.browser
    sid = s.sandbox_id
    b.click(f'{row(sid)} button[data-action="exec"]')
    assert b.evaluate("document.querySelector('#exec-target').value") == sid
    b.type_text("#exec-cmd", "echo hello-from-dashboard; echo oops >&2; exit 3")
    b.click("#exec-submit")
    b.wait_js("!document.querySelector('#exec-result').hidden", OP_TIMEOUT, "the exec result")
    assert b.evaluate("document.querySelector('#exec-stdout').textContent") == "hello-from-dashboard\n"
    assert b.evaluate("document.querySelector('#exec-stderr').textContent") == "oops\n"
    assert b.evaluate("document.querySelector('#exec-exit').textContent") == "3"
    shot(b, "exec")
    no_page_problems(b)


def test_pause_shows_paused(s):
    b = s.browser
    sid = s.sandbox_id
    b.click(f'{row(sid)} button[data-action="pause"]')
    b.wait_js(f"(document.querySelector({js(row(sid))}) || {{dataset: {{}}}}).dataset.status === 'paused'",
              OP_TIMEOUT, f"{sid} paused in the page")
    assert s.status_of(sid) == "paused"
    assert b.evaluate(f"document.querySelector({js(row(sid) + ' .state')}).textContent") == "paused"
    # A paused sandbox offers resume, not pause or exec, and no countdown.
    actions = b.evaluate(f"Array.from(document.querySelectorAll({js(row(sid) + ' button')}))"
                         ".map(x => x.dataset.action)")
    assert actions == ["resume", "delete"], actions
    shot(b, "paused")
    no_page_problems(b)


def test_resume_shows_running(s):
    b = s.browser
    sid = s.sandbox_id
    b.click(f'{row(sid)} button[data-action="resume"]')
    b.wait_js(f"(document.querySelector({js(row(sid))}) || {{dataset: {{}}}}).dataset.status === 'running'",
              OP_TIMEOUT, f"{sid} running again in the page")
    assert s.status_of(sid) == "running"


def test_api_errors_are_shown_with_their_code(s):
    b = s.browser
    b.type_text("#create-template", "no-such-template")
    b.click("#create-submit")
    text = b.wait_js("!document.querySelector('#error').hidden && document.querySelector('#error-text').textContent",
                     OP_TIMEOUT, "the error banner")
    assert text.startswith("Create failed: 400 invalid_request: "), text
    shot(b, "error")
    b.click("#error-close")
    assert b.evaluate("document.querySelector('#error').hidden") is True


def test_delete_asks_once_more_then_removes_the_row(s):
    b = s.browser
    sid = s.sandbox_id
    sel = f'{row(sid)} button[data-action="delete"]'
    b.click(sel)
    assert b.evaluate(f"document.querySelector({js(sel)}).textContent") == "Confirm delete"
    assert s.status_of(sid) == "running", "the first click must not delete"
    b.click(sel)
    b.wait_js(f"!document.querySelector({js(row(sid))})", OP_TIMEOUT, f"{sid} gone from the page")
    assert s.status_of(sid) == "stopped"
    assert b.evaluate("document.querySelector('#empty').hidden") is False
    no_page_problems(b)


def test_forget_key_clears_it(s):
    b = s.browser
    b.click("#key-forget")
    assert b.evaluate("sessionStorage.getItem('torpor.apiKey')") is None
    assert b.evaluate("document.querySelector('#login').hidden") is False


def main():
    return run_tests(lambda: DashboardStack("dashboard"), [
        test_page_asks_for_a_key,
        test_a_wrong_key_is_refused_with_its_code,
        test_pasting_the_key_shows_the_team_sandboxes,
        test_create_shows_the_sandbox_running,
        test_refreshes_keep_the_row_and_its_buttons,
        test_exec_shows_stdout_stderr_and_exit_code,
        test_pause_shows_paused,
        test_resume_shows_running,
        test_api_errors_are_shown_with_their_code,
        test_delete_asks_once_more_then_removes_the_row,
        test_forget_key_clears_it,
    ])


if __name__ == "__main__":
    sys.exit(main())
