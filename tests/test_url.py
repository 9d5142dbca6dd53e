"""Tests for agent.bus.url: AMQP URL parsing, where the URL comes from, password secrecy."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.bus.url import DEFAULT_URL, AmqpUrl, UrlError, parse_url, resolve_url

# ----------------------------------------------------------------------------- parsing


def test_default_url() -> None:
    assert DEFAULT_URL == "amqp://guest:guest@localhost/"
    u = parse_url(DEFAULT_URL)
    assert (u.scheme, u.host, u.port, u.vhost, u.user, u.password) == (
        "amqp",
        "localhost",
        5672,
        "/",
        "guest",
        "guest",
    )
    assert u.tls is False
    assert u.params == {}
    assert u.where == "localhost:5672"


def test_session_vhost() -> None:
    u = parse_url("amqp://paul:s3cret@f-interop.rennes.inria.fr/session05")
    assert u.user == "paul"
    assert u.password == "s3cret"
    assert u.host == "f-interop.rennes.inria.fr"
    assert u.port == 5672
    assert u.vhost == "session05"


@pytest.mark.parametrize("url", ["amqp://u:p@host", "amqp://u:p@host/", "amqp://u:p@host:5672"])
def test_empty_path_is_the_default_vhost(url: str) -> None:
    assert parse_url(url).vhost == "/"


def test_missing_credentials_default_to_guest() -> None:
    u = parse_url("amqp://host/v")
    assert (u.user, u.password) == ("guest", "guest")


def test_user_without_password() -> None:
    u = parse_url("amqp://alice@host/v")
    assert u.user == "alice"


@pytest.mark.parametrize(
    ("url", "user", "password", "vhost"),
    [
        ("amqp://u:p%40ss@host/v", "u", "p@ss", "v"),
        ("amqp://u:p@host/%2F", "u", "p", "/"),
        ("amqp://u:p@host/%2f", "u", "p", "/"),
        ("amqp://u:p@host/my%2Fvhost", "u", "p", "my/vhost"),
        ("amqp://us%3Aer:p%3Aw@host/v", "us:er", "p:w", "v"),
        ("amqp://a%40b.c:%2F%3F%23%25@host/v", "a@b.c", "/?#%", "v"),
        ("amqp://u:p%20w@host/session%2005", "u", "p w", "session 05"),
        ("amqp://%C3%A9:%E2%82%AC@host/v", "é", "€", "v"),
        ("amqp://u:@host/v", "u", "", "v"),
    ],
)
def test_percent_encoding(url: str, user: str, password: str, vhost: str) -> None:
    u = parse_url(url)
    assert (u.user, u.password, u.vhost) == (user, password, vhost)


def test_vhost_with_a_raw_slash_is_refused_with_a_hint() -> None:
    with pytest.raises(UrlError, match="%2F"):
        parse_url("amqp://u:p@host/my/vhost")


@pytest.mark.parametrize(
    ("url", "host", "port", "where"),
    [
        ("amqp://u:p@host:5673/v", "host", 5673, "host:5673"),
        ("amqp://u:p@10.0.0.5:1/v", "10.0.0.5", 1, "10.0.0.5:1"),
        ("amqp://u:p@HOST.example:65535/v", "host.example", 65535, "host.example:65535"),
        ("amqp://u:p@[::1]:5673/v", "::1", 5673, "[::1]:5673"),
        ("amqp://u:p@[2001:db8::1]/v", "2001:db8::1", 5672, "[2001:db8::1]:5672"),
        ("amqps://u:p@[::1]/v", "::1", 5671, "[::1]:5671"),
    ],
)
def test_host_and_port(url: str, host: str, port: int, where: str) -> None:
    u = parse_url(url)
    assert (u.host, u.port, u.where) == (host, port, where)
    assert u.vhost == "v"


def test_amqps_uses_tls_and_port_5671() -> None:
    u = parse_url("amqps://u:p@broker.example/session05")
    assert u.tls is True
    assert u.port == 5671
    assert u.where == "broker.example:5671"
    assert parse_url("amqps://u:p@broker.example:5999/v").port == 5999
    assert parse_url("AMQPS://u:p@broker.example/v").tls is True


def test_query_parameters() -> None:
    u = parse_url("amqp://u:p@host/v?heartbeat=10&connection_attempts=3")
    assert u.params == {"heartbeat": 10, "connection_attempts": 3}
    assert isinstance(u.params["heartbeat"], int)
    assert u.vhost == "v"


def test_float_query_parameters() -> None:
    u = parse_url("amqp://u:p@host/?retry_delay=2.5&socket_timeout=3&stack_timeout=9.5")
    assert u.params == {"retry_delay": 2.5, "socket_timeout": 3.0, "stack_timeout": 9.5}
    assert u.vhost == "/"


@pytest.mark.parametrize(
    "query",
    [
        "bogus=1",
        "Heartbeat=10",
        "heartbeat",
        "heartbeat=",
        "heartbeat=ten",
        "heartbeat=1.5",
        "heartbeat=-1",
        "heartbeat=3601",
        "connection_attempts=0",
        "connection_attempts=101",
        "channel_max=0",
        "channel_max=65536",
        "frame_max=4095",
        "frame_max=131073",  # pika refuses frames above 128 KiB
        "retry_delay=-1",
        "retry_delay=nan",
        "socket_timeout=inf",
        "socket_timeout=0",
        "heartbeat=10&bogus=1",
        "ssl_options=x",
    ],
)
def test_refused_query_parameters(query: str) -> None:
    with pytest.raises(UrlError) as info:
        parse_url(f"amqp://u:secretpw@host/v?{query}")
    assert "secretpw" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "localhost",
        "guest:guest@localhost",
        "http://u:p@host/v",
        "amqpx://u:p@host/v",
        "ftp://host/",
        "//u:p@host/v",
        "amqp:/host/v",
    ],
)
def test_not_an_amqp_url(url: str) -> None:
    with pytest.raises(UrlError):
        parse_url(url)


@pytest.mark.parametrize("url", ["amqp://", "amqp:///v", "amqp://u:p@/v", "amqp://u:p@:5672/v"])
def test_no_host(url: str) -> None:
    with pytest.raises(UrlError, match="host"):
        parse_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://u:p@host:abc/v",
        "amqp://u:p@host:65536/v",
        "amqp://u:p@host:99999/v",
        "amqp://u:p@host:-1/v",
        "amqp://u:p@host:1.5/v",
        "amqp://u:p@[::1/v",
        "amqp://u:p@::1]/v",
    ],
)
def test_bad_port_or_host(url: str) -> None:
    with pytest.raises(UrlError):
        parse_url(url)


@pytest.mark.parametrize("value", [None, 5, b"amqp://host/"])
def test_not_a_string(value: object) -> None:
    with pytest.raises(UrlError):
        parse_url(value)  # type: ignore[arg-type]


def test_surrounding_white_space_is_ignored() -> None:
    assert parse_url("  amqp://u:p@host/v\n").host == "host"


# ----------------------------------------------------------------------------- resolve_url


def test_resolve_url_prefers_the_option() -> None:
    env = {"AMQP_URL": "amqp://e:e@env-host/env"}
    assert resolve_url("amqp://c:c@cli-host/cli", env) == "amqp://c:c@cli-host/cli"


def test_resolve_url_falls_back_to_env() -> None:
    env = {"AMQP_URL": "amqp://e:e@env-host/env"}
    assert resolve_url(None, env) == "amqp://e:e@env-host/env"
    assert resolve_url("", env) == "amqp://e:e@env-host/env"


def test_resolve_url_default() -> None:
    assert resolve_url(None, {}) == DEFAULT_URL
    assert resolve_url(None, {"AMQP_URL": ""}) == DEFAULT_URL
    assert resolve_url(None, {"OTHER": "amqp://x/"}) == DEFAULT_URL


def test_resolve_url_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://p:p@from-environ/s")
    assert resolve_url(None) == "amqp://p:p@from-environ/s"
    assert resolve_url("amqp://c@x/") == "amqp://c@x/"
    monkeypatch.delenv("AMQP_URL")
    assert resolve_url(None) == DEFAULT_URL


# ----------------------------------------------------------------------------- secrecy


@pytest.mark.parametrize(
    "url",
    [
        "amqp://paul:Tr0ub4dor@host/session05",
        "amqps://paul:Tr0ub4dor@[::1]:5671/%2F",
        "amqp://paul:Tr0ub4dor@host:5673/?heartbeat=5",
    ],
)
def test_redacted_hides_the_password(url: str) -> None:
    u = parse_url(url)
    text = u.redacted()
    assert "Tr0ub4dor" not in text
    assert "***" in text
    assert "paul" in text
    assert u.where in text
    assert "Tr0ub4dor" not in repr(u)


def test_redacted_names_the_vhost_so_it_parses_back() -> None:
    for url in ["amqp://u:pw@h/session05", "amqp://u:pw@h/", "amqps://u:pw@[::1]:1234/v"]:
        u = parse_url(url)
        back = parse_url(u.redacted())
        assert (back.scheme, back.host, back.port, back.vhost, back.user) == (
            u.scheme,
            u.host,
            u.port,
            u.vhost,
            u.user,
        )


def test_password_is_not_in_the_repr() -> None:
    u = AmqpUrl("amqp", "h", 5672, "/", "u", "hunter2hunter2")
    assert "hunter2hunter2" not in repr(u)
    assert "hunter2hunter2" not in str(u)


# Broken URLs that carry a password; {pw} is the percent-encoded password.
BROKEN_TEMPLATES = [
    "amqp://user:{pw}@host:abc/v",
    "amqp://user:{pw}@host:70000/v",
    "amqp://user:{pw}@[::1/v",
    "amqp://user:{pw}@/v",
    "http://user:{pw}@host/v",
    "amqp://user:{pw}@host/v?bogus=1",
    "amqp://user:{pw}@host/v?heartbeat=x",
    "amqp://user:{pw}@host/a/b",
    "amqp://user:{pw}@host\uff03/v",
]

# "§" first: a password can then only be in a message if it leaked (not by coincidence
# with the message's own words).
passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=4, max_size=30
).map(lambda text: "\u00a7" + text)


@settings(max_examples=150, deadline=None)
@given(passwords, st.sampled_from(BROKEN_TEMPLATES))
def test_url_errors_never_show_the_password(password: str, template: str) -> None:
    encoded = quote(password, safe="")
    url = template.format(pw=encoded)
    with pytest.raises(UrlError) as info:
        parse_url(url)
    message = str(info.value)
    assert password not in message
    assert encoded not in message


@settings(max_examples=150, deadline=None)
@given(passwords)
def test_percent_encoded_passwords_round_trip(password: str) -> None:
    u = parse_url(f"amqp://user:{quote(password, safe='')}@host/v")
    assert u.password == password
    assert password not in u.redacted()
    assert password not in repr(u)


def _rotate(text: str) -> str:
    """Another password of the same shape: ASCII letters and digits shifted, rest kept."""
    out = []
    for ch in text:
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - 97 + 7) % 26 + 97))
        elif "A" <= ch <= "Z":
            out.append(chr((ord(ch) - 65 + 7) % 26 + 65))
        elif "0" <= ch <= "9":
            out.append(chr((ord(ch) - 48 + 3) % 10 + 48))
        else:
            out.append(ch)
    return "".join(out)


RAW_TEMPLATES = [
    "amqp://user:{pw}@host/v",
    "amqp://user:{pw}@host:5672/v",
    "amqp://user:{pw}@host:x/v",
    "amqp://user:{pw}@host/v?heartbeat=5",
    "amqps://user:{pw}@[::1]/v",
]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("abcXYZ0189@:/?#%[]&= \uff03\uff0f"), min_size=1, max_size=12),
    st.sampled_from(RAW_TEMPLATES),
)
def test_url_errors_do_not_depend_on_an_unencoded_password(password: str, template: str) -> None:
    """A pasted password with '/', '?', '#' or '@' left raw must not leak, not even in part.

    The error for a password and for another one of the same shape (same special
    characters, other letters and digits) must be the same text.
    """
    other = _rotate(password)
    assume(other != password)
    errors = []
    for pw in (password, other):
        try:
            parse_url(template.format(pw=pw))
        except UrlError as exc:
            errors.append(str(exc))
    if len(errors) == 2:
        assert errors[0] == errors[1]


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("amqp://guest:my/Secret@host/v", ["my", "Secret"]),  # '/' in a raw password
        ("amqp://guest:my?Secret=1@host/v", ["my", "Secret"]),  # '?'
        ("amqp://guest:12?Secret=1@host/v", ["12?", "Secret"]),  # '?' after a valid "port"
        ("amqp://guest:my#Secret@host/v", ["my", "Secret"]),  # '#'
        ("amqp://guest:p@ss\uff03Secret@host/v", ["ss\uff03", "Secret"]),  # NFKC '#' and '@'
    ],
)
def test_raw_special_characters_in_the_password_are_reported_without_it(
    url: str, fragments: list[str]
) -> None:
    with pytest.raises(UrlError) as info:
        parse_url(url)
    message = str(info.value)
    for fragment in fragments:
        assert fragment not in message
