"""A real `keel serve` refuses abuse before reading it: oversized and anonymous bodies
(answered while the client is still sending, the server's memory flat), a configurable
body limit, and proxy headers believed only from configured proxies (the failed sign-in
limit holds against a rotating X-Forwarded-For)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.backends import fresh_url
from tests.limits import WAIT
from tests.services.console_server import Console, console_server
from tests.services.pages import csrf_of
from tests.services.upload import stream_post

MIB = 1024 * 1024
HUGE = 200 * MIB
# What may be in flight when the server answers: socket buffers on both sides, and the
# 1 MiB a signed-in request may send. Far below the 200 MB the client offers.
SLACK = 16 * MIB
RSS_MARGIN = 20 * MIB
APPROVE = "/api/v1/approvals/r1:approval:refund%230/approve"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with console_server(tmp_path_factory.mktemp("limits"), worker=False) as console:
        console.tokens["rita"] = console.add_user("rita", "reviewer", ["payments"])
        yield console


def _rss(console: Console) -> int:
    assert console.server is not None
    return int(psutil.Process(console.server.popen.pid).memory_info().rss)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_anonymous_200_mb_post_is_refused_before_its_body_is_read(
    served: Console, chunked: bool
) -> None:
    before = _rss(served)
    for path in (APPROVE, "/users", "/logout"):  # the API, an admin form, a session form
        up = stream_post(served.port, path, HUGE, chunked=chunked)
        assert up.status in (401, 413), up
        assert not up.finished and up.sent < SLACK, up
        if chunked:  # no size known up front: refused for want of a token or session
            assert up.status == 401, up
        else:  # the declared size alone is enough
            assert up.status == 413, up
        assert "connection: close" in up.head.lower(), up.head
    assert _rss(served) - before < RSS_MARGIN
    served.check_alive()


def test_a_signed_in_upload_is_cut_off_past_the_limit(served: Console) -> None:
    auth = {"Authorization": f"Bearer {served.tokens['rita']}"}
    before = _rss(served)
    for chunked in (False, True):
        up = stream_post(served.port, APPROVE, HUGE, headers=auth, chunked=chunked)
        assert up.status == 413 and not up.finished and up.sent < SLACK, up
    # just over the default 1 MiB: refused; a normal decision body is read as usual
    assert stream_post(served.port, APPROVE, MIB + 1, headers=auth).status == 413
    small = stream_post(served.port, APPROVE, 64, headers=auth)
    assert small.status == 404 and small.finished, small  # no such approval: read and routed
    assert _rss(served) - before < RSS_MARGIN


def test_the_sign_in_form_reads_at_most_16_kib(served: Console) -> None:
    form = "application/x-www-form-urlencoded"
    up = stream_post(served.port, "/login", HUGE, chunked=True, content_type=form)
    assert up.status == 413 and not up.finished and up.sent < SLACK, up
    assert stream_post(served.port, "/login", 17 * 1024, content_type=form).status == 413
    # 15 KiB is read: refused only for its (missing) sign-in CSRF token
    fits = stream_post(served.port, "/login", 15 * 1024, content_type=form)
    assert fits.status == 403 and fits.finished, fits


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--max-body", "4KiB"), {}), ((), {"KEEL_MAX_BODY": "4096"})],
    ids=["option", "env"],
)
def test_the_body_limit_is_configurable(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    with console_server(tmp_path, *args, worker=False, env=env) as console:
        auth = {"Authorization": f"Bearer {console.add_user('rita', 'reviewer', ['*'])}"}
        assert stream_post(console.port, APPROVE, 5000, headers=auth).status == 413
        assert stream_post(console.port, APPROVE, 5000, headers=auth, chunked=True).status == 413
        assert stream_post(console.port, APPROVE, 4000, headers=auth).status == 404


# -- proxy headers ----------------------------------------------------------------------

BAD = {"Authorization": "Bearer keel_0123456789abcdef_guess"}


def _failures(console: Console, forwarded: list[str]) -> list[int]:
    """One failed token per X-Forwarded-For value; the status codes."""
    with httpx.Client(base_url=console.base_url, trust_env=False, timeout=WAIT) as c:
        return [
            c.get("/api/v1/me", headers={**BAD, "X-Forwarded-For": ip}).status_code
            for ip in forwarded
        ]


def test_a_rotating_x_forwarded_for_does_not_escape_the_failed_sign_in_limit(
    served: Console,
) -> None:
    codes = _failures(served, [f"203.0.113.{i}" for i in range(12)])
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429], codes
    # the sign-in form shares the limit: this address is blocked there too
    with httpx.Client(base_url=served.base_url, trust_env=False, timeout=WAIT) as c:
        form = c.get("/login", headers={"X-Forwarded-For": "198.51.100.7"})
        # the form's CSRF cookie is Secure, so httpx keeps it from plain HTTP: send it by hand
        cookie = f"keel_login_csrf={form.cookies['keel_login_csrf']}"
        r = c.post("/login", headers={"X-Forwarded-For": "198.51.100.8", "Cookie": cookie},
                   data={"csrf": csrf_of(form.text), "token": served.tokens["rita"]})
        assert r.status_code == 429 and "Too many failed sign-ins" in r.text


def test_behind_a_configured_proxy_the_forwarded_address_is_the_client(tmp_path: Path) -> None:
    with console_server(
        tmp_path, "--forwarded-allow-ips", "127.0.0.1", worker=False
    ) as console:
        rotating = _failures(console, [f"203.0.113.{i}" for i in range(12)])
        assert rotating == [401] * 12  # twelve different clients, one failure each
        same = _failures(console, ["198.51.100.1"] * 11)
        assert same[:10] == [401] * 10 and same[10] == 429  # one client, limited
        token = console.add_user("rita", "reviewer")
        with httpx.Client(base_url=console.base_url, trust_env=False, timeout=WAIT) as c:
            me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}",
                                               "X-Forwarded-For": "198.51.100.2"})
            assert me.status_code == 200  # another client behind the proxy is unaffected
            blocked = c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}",
                                                    "X-Forwarded-For": "198.51.100.1"})
            assert blocked.status_code == 429


async def test_a_star_trusts_every_peer_and_a_named_proxy_only_itself(tmp_path: Path) -> None:
    import keel
    from keel.server.app import create_app

    app = keel.App(fresh_url(tmp_path, "k"))
    for allowed, limited in (("*", False), ("10.0.0.5", True)):
        server = create_app(app, forwarded_allow_ips=allowed)
        transport = httpx.ASGITransport(app=server, client=("192.0.2.50", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as c:
            codes = [
                (await c.get("/api/v1/me", headers={**BAD, "X-Forwarded-For": f"203.0.113.{i}"}))
                .status_code
                for i in range(11)
            ]
        # believed: eleven clients, one failure each; not: one peer, limited after ten
        assert codes == [401] * 10 + [429 if limited else 401], (allowed, codes)
    await app.close()


# -- settings ---------------------------------------------------------------------------


def test_settings_come_from_arguments_then_env_then_keel_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keel.server.settings import ServeSettings

    monkeypatch.chdir(tmp_path)
    for var in ("KEEL_MAX_BODY", "KEEL_FORWARDED_ALLOW_IPS", "KEEL_RAW_PAYLOADS"):
        monkeypatch.delenv(var, raising=False)
    assert ServeSettings.load() == ServeSettings(MIB, (), ("reviewer", "admin"))
    (tmp_path / "keel.toml").write_text(
        '[keel.serve]\nmax_body = "2MiB"\nforwarded_allow_ips = ["10.0.0.5", "10.1.0.0/16"]\n'
        '[keel.roles]\nraw_payloads = ["admin"]\n'
    )
    assert ServeSettings.load() == ServeSettings(2 * MIB, ("10.0.0.5", "10.1.0.0/16"), ("admin",))
    monkeypatch.setenv("KEEL_MAX_BODY", "512KiB")
    monkeypatch.setenv("KEEL_FORWARDED_ALLOW_IPS", "")
    monkeypatch.setenv("KEEL_RAW_PAYLOADS", "viewer,reviewer,admin")
    assert ServeSettings.load() == ServeSettings(512 * 1024, (), ("viewer", "reviewer", "admin"))
    got = ServeSettings.load(max_body="10MB", forwarded_allow_ips="127.0.0.1")
    assert (got.max_body, got.forwarded_allow_ips) == (10_000_000, ("127.0.0.1",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_body": "lots"}, "max_body 'lots' is not a size: use bytes (1048576) or"),
        ({"max_body": "100"}, "max_body '100' is below 1024 bytes"),
        ({"forwarded_allow_ips": "10.0.0.5,proxy.local"},
         "forwarded_allow_ips: 'proxy.local' is not an IP address or network"),
        ({"raw_payloads": "reviewer,auditor"}, "raw_payloads: unknown role 'auditor'"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(
    kwargs: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keel
    from keel.server.app import create_app
    from keel.server.settings import ServeSettings

    monkeypatch.chdir(tmp_path)
    with pytest.raises(keel.ConfigError) as err:
        ServeSettings.load(**kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)
    with pytest.raises(keel.ConfigError):
        create_app(keel.App(fresh_url(tmp_path, "k")), **kwargs)  # type: ignore[arg-type]


def test_keel_serve_refuses_a_bad_limit_in_one_line(tmp_path: Path) -> None:
    console = Console(tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "keel", "serve", "--max-body", "lots"],
            cwd=tmp_path, env=console.env(), capture_output=True, text=True, timeout=WAIT,
        )
    finally:
        console.stop()
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: max_body 'lots' is not a size"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
