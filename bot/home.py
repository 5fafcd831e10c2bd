"""The Home tab: who may see which org, and publishing it from each org's stored check.

A user sees an org when listed as its approver or operator (by user ID, or in a listed
Slack user group) or when in its channel. Group and channel members are asked from Slack
(`usergroups.users.list`, `conversations.members`) through the approvals' GroupCache (at
most 60 s old); a lookup Slack refuses hides that org (fail closed), it never shows one.

Nothing here reads Exchange: the cards come from workers.status.last_check (written by every
status/plan job and sweep) and the open operations. The Home tab is published when the
user opens it (bot.listeners.app_home, after the ack), after their "Check now", and for
everyone who opened it lately when an org's stored status changes (the RQ callbacks call
`refresh_org`; users who opened Home are kept in `exauth:home:viewers`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from redis import Redis
from slack_sdk import WebClient

from bot.render.home_view import OperationLine, OrgCard, home_view
from config.schema import OrgSettings, Settings
from workers import redis_keys
from workers.changes import lifecycle, operation
from workers.changes.approval import GroupCache
from workers.status import last_check

log = logging.getLogger(__name__)

HOME_VIEWER_DAYS = 30  # a user who has not opened Home for this long is not refreshed
MAX_REFRESH = 200  # Home tabs refreshed per status change (the most recent viewers)
MEMBERS_PAGE = 1000


class Visibility:
    """Which orgs a user may see; Slack lookups cached at most 60 s (GroupCache)."""

    def __init__(self, settings: Settings, client: WebClient) -> None:
        self.settings = settings
        self.client = client
        self.groups = GroupCache(self._group_members)
        self.channels = GroupCache(self._channel_members)

    def _group_members(self, group: str) -> list[str]:
        return list(self.client.usergroups_users_list(usergroup=group)["users"])

    def _channel_members(self, channel: str) -> list[str]:
        members: list[str] = []
        cursor = None
        while True:
            page = self.client.conversations_members(channel=channel, limit=MEMBERS_PAGE,
                                                     cursor=cursor)
            members += page.get("members") or []
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return members

    def may_see(self, user: str, org: OrgSettings) -> bool:
        listed = [*org.approvers, *org.operators]
        if user in listed or self.groups.membership(user, listed).groups:
            return True
        if not org.channel:
            return False
        try:
            return user in self.channels.members(org.channel)
        except Exception as exc:  # Slack refused or is down: this org stays hidden
            log.warning("members of %s could not be listed: %s", org.channel,
                        type(exc).__name__)
            return False

    def orgs_for(self, user: str) -> list[OrgSettings]:
        return [org for org in self.settings.orgs if user and self.may_see(user, org)]


_team_urls: dict[int, str] = {}
_team_lock = threading.Lock()


def team_url(client: WebClient) -> str:
    """The workspace URL (auth.test, once per client) for links to operation cards."""
    with _team_lock:
        cached = _team_urls.get(id(client))
    if cached is not None:
        return cached
    try:
        url = str(client.auth_test().get("url") or "")
    except Exception as exc:
        log.warning("workspace URL unknown: %s", type(exc).__name__)
        return ""
    with _team_lock:
        _team_urls[id(client)] = url
    return url


def card_link(base: str, card: dict[str, str] | None) -> str:
    """The permalink of an operation card (`<workspace>/archives/<channel>/p<ts digits>`)."""
    if not base or not card or not card.get("channel") or not card.get("ts"):
        return ""
    return f"{base.rstrip('/')}/archives/{card['channel']}/p{card['ts'].replace('.', '')}"


def org_cards(conn: Redis, orgs: list[OrgSettings], *, now: datetime, link_base: str = "",
              checking: Iterable[str] = ()) -> list[OrgCard]:
    checks = last_check.load_many(conn, [org.name for org in orgs])
    open_by_org: dict[str, list[dict]] = {}
    for op in operation.open_ops(conn):
        open_by_org.setdefault(op["org"], []).append(op)
    checking = set(checking)
    return [_card(org, check, open_by_org.get(org.name, []), now, link_base,
                  org.name in checking) for org, check in zip(orgs, checks, strict=True)]


def _card(org: OrgSettings, check: last_check.LastCheck, ops: list[dict], now: datetime,
          link_base: str, checking: bool) -> OrgCard:
    status = check.status
    current_days = next_days = None
    effective = None
    problems: list[tuple[str, str]] = []
    if status is not None:
        current_days = days_left(last_check.auth_cert(status, "current"), now)
        next_days = days_left(last_check.auth_cert(status, "next"), now)
        effective = last_check.next_effective(status)
        problems = [(str(b.get("server")), str(b.get("problem")))
                    for b in last_check.backends(status) if b.get("problem")]
    lines = []
    for op in ops:
        index = lifecycle.next_index(op)
        waiting = op["steps"][index]["title"] if index is not None else ""
        lines.append(OperationLine(op["id"], op["kind"], op["state"], waiting,
                                   card_link(link_base, op.get("card"))))
    return OrgCard(
        org=org.name, channel=org.channel,
        state=last_check.overall_state(status)[0] if status is not None else "never",
        current_days=current_days, next_days=next_days, next_effective=effective,
        backend_problems=problems, operations=lines, checked_at=check.succeeded_at,
        attempted_at=check.attempted_at, last_ok=check.ok, last_error=check.error,
        checking=checking)


def days_left(cert: dict | None, now: datetime) -> int | None:
    """Whole days left of a certificate entry, counted from now (floored, negative once
    expired, as the status JSON counts them from its checked_at)."""
    not_after = last_check.cert_window(cert)[1]
    if not_after is None:
        return None if cert is None else cert.get("days_left")
    return math.floor((not_after - now).total_seconds() / 86400)


def publish(client: WebClient, conn: Redis, visibility: Visibility, user: str, *,
            checking: Iterable[str] = (), remember: bool = True) -> dict:
    """Build and publish one user's Home tab; returns the view."""
    now = datetime.now(UTC)
    orgs = visibility.orgs_for(user)
    view = home_view(org_cards(conn, orgs, now=now, link_base=team_url(client),
                               checking=checking), now=now)
    client.views_publish(user_id=user, view=view)
    if remember:
        conn.zadd(redis_keys.home_viewers(), {user: time.time()})
    return view


def refresh_org(client: WebClient, conn: Redis, visibility: Visibility, org_name: str, *,
                skip: Iterable[str] = ()) -> list[str]:
    """Publish again the Home tab of every recent viewer who may see `org_name` (its status
    changed); returns the users refreshed. One failure does not stop the others."""
    try:
        org = visibility.settings.org(org_name)
    except Exception:
        return []
    since = time.time() - HOME_VIEWER_DAYS * 86400
    key = redis_keys.home_viewers()
    conn.zremrangebyscore(key, "-inf", since)
    viewers = [v.decode() if isinstance(v, bytes) else str(v)
               for v in conn.zrevrangebyscore(key, "+inf", since, start=0, num=MAX_REFRESH)]
    done = []
    skipped = set(skip)
    for user in viewers:
        if user in skipped or not visibility.may_see(user, org):
            continue
        try:
            publish(client, conn, visibility, user, remember=False)
            done.append(user)
        except Exception as exc:
            log.warning("Home tab of %s not refreshed: %s", user, type(exc).__name__)
    return done


_visibilities: dict[int, Visibility] = {}


def visibility_for(settings: Settings, client: WebClient) -> Visibility:
    """One Visibility per client in a process (RQ callbacks share its caches)."""
    found = _visibilities.get(id(client))
    if found is None:
        found = _visibilities[id(client)] = Visibility(settings, client)
    found.settings = settings  # a config change is seen at the next callback
    return found
