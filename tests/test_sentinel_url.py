"""`redis+sentinel://` URLs: what they name, what the config accepts, and secrets masked."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.load import settings_from_dict
from workers.audit import scrub_text
from workers.jobs import sentinel
from workers.jobs.queues import connect, unreachable


def test_every_part_of_the_url() -> None:
    parsed = sentinel.parse(
        "redis+sentinel://exauth:s3cret@s1.contoso.com:26380,s2.contoso.com,10.0.0.3:5000"
        "/exauth-main/2?sentinel_password=top")
    assert parsed.sentinels == (("s1.contoso.com", 26380), ("s2.contoso.com", 26379),
                                ("10.0.0.3", 5000))
    assert (parsed.service, parsed.db, parsed.username) == ("exauth-main", 2, "exauth")
    assert (parsed.password, parsed.sentinel_password) == ("s3cret", "top")
    assert "s3cret" not in repr(parsed) and "top" not in repr(parsed)


def test_defaults_port_db_and_no_password() -> None:
    parsed = sentinel.parse("redis+sentinel://sentinel-1/exauth")
    assert parsed.sentinels == (("sentinel-1", 26379),)
    assert (parsed.db, parsed.username, parsed.password) == (0, None, None)


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel:///exauth/0", "names no Sentinel host"),
    ("redis+sentinel://s1,s2", "needs /<master name>"),
    ("redis+sentinel://s1/exauth/zero", "database must be a number"),
    ("redis+sentinel://s1:port/exauth", "port of"),
    ("redis+sentinel://s1/exauth?timeout=3", "unknown option"),
])
def test_a_wrong_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        sentinel.parse(url)


def test_the_config_takes_a_sentinel_url_and_refuses_one_without_a_master() -> None:
    url = "redis+sentinel://s1,s2,s3/exauth/0"
    assert settings_from_dict({"redis": {"url": url}}).redis.url == url
    with pytest.raises(ConfigError, match="names its master"):
        settings_from_dict({"redis": {"url": "redis+sentinel://s1,s2,s3"}})


def test_connect_gives_a_client_on_the_sentinels_and_never_shows_a_password() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/exauth/0?sentinel_password=spw"
    client = connect(url, timeout=0.2)
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.service_name == "exauth"
    assert (kwargs["db"], kwargs["password"], kwargs["socket_timeout"]) == (0, "pw", 0.2)
    assert scrub_text(url) == ("redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/exauth/0"
                               "?sentinel_password=***")
    assert "pw" not in unreachable(url, OSError("down")).replace("password", "")
