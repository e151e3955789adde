"""Who may see the dashboard and its read API: `SWITCHBOARD_API_TOKEN`, as a bearer header or a cookie.

With the token set, every `/dashboard…` page and every `GET /api/…` request needs either
`Authorization: Bearer <token>` or the session cookie that `POST /login` sets after the token was typed
into its form. The cookie holds a random session id, new at every login and revoked at logout (sessions
live in this process: a restart logs every browser out), never the token: a copied cookie opens the
dashboard but cannot place calls (`POST /api/calls` and the dial form take only the token). After
`MAX_FAILURES` wrong tokens from one address within `FAILURE_WINDOW_S`, its logins are refused (429) until
the window has passed. Comparisons are constant-time; the token is never logged.
Without the token everything here is open (a warning is logged once at start-up).
"""

from __future__ import annotations

import hmac
import html
import logging
import secrets
import time
from collections import deque
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

log = logging.getLogger("switchboard.web")

COOKIE = "switchboard_session"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
MAX_FAILURES = 10  # wrong tokens per address...
FAILURE_WINDOW_S = 300.0  # ...within this long, before its logins are refused
TRACKED_ADDRESSES = 10_000  # addresses with recent wrong tokens kept; beyond, the oldest is forgotten


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server only (no `//host`, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


def is_https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


class Auth:
    """The dashboard's gate for one token (None: open)."""

    def __init__(self, token: str | None, env_name: str = "SWITCHBOARD_API_TOKEN") -> None:
        self.token = token or None
        self.env_name = env_name
        self._sessions: dict[str, float] = {}  # session id -> when it expires (monotonic)
        self._failures: dict[str, deque[float]] = {}  # address -> times of its recent wrong tokens

    @property
    def open(self) -> bool:
        return self.token is None

    def warn_if_open(self) -> None:
        if self.open:
            log.warning("the dashboard and its read API (/dashboard, GET /api/…) are OPEN to anyone who can "
                        "reach this server: set %s in production", self.env_name)

    def _new_session(self) -> str:
        now = time.monotonic()
        self._sessions = {sid: until for sid, until in self._sessions.items() if until > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = now + COOKIE_MAX_AGE_S
        return session

    def _valid_session(self, cookie: str) -> bool:
        until = self._sessions.get(cookie) if cookie else None
        return until is not None and until > time.monotonic()

    def _locked_out(self, address: str) -> float:
        """Seconds until `address` may try again (0: it may now)."""
        failures = self._failures.get(address)
        if failures is None:
            return 0.0
        now = time.monotonic()
        while failures and failures[0] <= now - FAILURE_WINDOW_S:
            failures.popleft()
        if not failures:
            del self._failures[address]  # forgotten once its window has passed
            return 0.0
        return failures[0] + FAILURE_WINDOW_S - now if len(failures) >= MAX_FAILURES else 0.0

    def _note_failure(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= TRACKED_ADDRESSES:
            del self._failures[next(iter(self._failures))]  # the longest-tracked: memory stays bounded
        self._failures.setdefault(address, deque()).append(time.monotonic())

    def token_ok(self, given: str) -> bool:
        """Is `given` the token? Constant-time; never with no token set."""
        return (self.token is not None and bool(given.strip())
                and hmac.compare_digest(given.strip().encode(), self.token.encode()))

    def bearer_ok(self, request: Request) -> bool:
        """Does the request carry `Authorization: Bearer <the token>`? (Never with no token set.)"""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given)

    def allows(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given.strip():
            return self.bearer_ok(request)
        return self._valid_session(request.cookies.get(COOKIE, ""))

    def denied(self, request: Request, page: bool) -> Response:
        """The answer to a request without a valid token: pages go to the login form, APIs get 401 JSON."""
        if page:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return JSONResponse({"error": f"missing or wrong token: send 'Authorization: Bearer <token>' "
                                      f"({self.env_name}) or log in at /login"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    # --- the login form -------------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """GET: the form; POST: check the token, set the session cookie, go on to `next`."""
        target = safe_next(request.query_params.get("next"))
        if self.open:
            return RedirectResponse(target, status_code=303)
        if request.method == "GET":
            return HTMLResponse(login_page(target, ""))
        form = await request.form()
        given = str(form.get("token") or "")
        target = safe_next(str(form.get("next") or target))
        address = _peer(request)
        wait_s = self._locked_out(address)
        if wait_s:
            return HTMLResponse(login_page(target, f"Too many wrong tokens: try again in {wait_s:.0f} s."),
                                status_code=429, headers={"Retry-After": str(int(wait_s) + 1)})
        if not self.token_ok(given):
            self._note_failure(address)
            log.warning("login: wrong token from %s", address)
            return HTMLResponse(login_page(target, "Wrong token."), status_code=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, self._new_session(), max_age=COOKIE_MAX_AGE_S, path="/", httponly=True,
                            samesite="strict", secure=is_https(request))
        return response

    async def logout(self, request: Request) -> Response:
        self._sessions.pop(request.cookies.get(COOKIE, ""), None)  # revoked: a copy of it opens nothing now
        response = RedirectResponse("/login" if not self.open else "/dashboard", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request))
        return response


def login_page(target: str, problem: str) -> str:
    error = f'<p class="error" role="alert">{html.escape(problem)}</p>' if problem else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Switchboard · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>
<body class="login"><main>
<h1>Switchboard</h1>
<form method="post" action="/login">
  <label for="token">API token (<code>SWITCHBOARD_API_TOKEN</code>)</label>
  <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
  <input type="hidden" name="next" value="{html.escape(target)}">
  <button type="submit">Log in</button>
</form>
{error}
</main></body></html>
"""
