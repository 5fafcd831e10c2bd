"""The Home tab's listeners: `app_home_opened`, and its "Check now" / "Open the plan" buttons.

Thin like every listener: bolt acks the event (or the listener acks the click) and the
work goes to the app's after-ack executor (bot.listeners.after_ack), which publishes the
view from the stored checks (bot.home: no Exchange call) about a second later at most, well
inside Slack's 3 s. "Check now" enqueues a status job whose callback publishes the clicker's
Home tab again (bot.callbacks.home_tab); "Open the plan" opens a modal at once (its
trigger_id is only good for 3 s) and fills it when the plan job is done. Both check again
that the clicker may see the org: a Home tab may be older than a change of approvers.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import home
from bot.callbacks import home_tab
from bot.listeners.after_ack import AfterAck
from bot.render.home_view import CHECK_NOW_ACTION, OPEN_PLAN_ACTION, plan_modal, plan_reading
from bot.render.messages import escape
from config.errors import ConfigError
from config.schema import Settings
from workers.jobs import read_jobs
from workers.jobs.queues import ReadJob, enqueue_reads

log = logging.getLogger(__name__)


def register(app: App, settings: Settings, after_ack: AfterAck) -> home.Visibility:
    """Add the Home tab listeners; returns the Visibility they share (its Slack lookups are
    cached, so it lives as long as the app)."""
    visibility = home.Visibility(settings, app.client)
    conn = after_ack.redis

    def publish(user: str, checking: tuple[str, ...] = ()) -> None:
        home.publish(app.client, conn, visibility, user, checking=checking)

    def check(user: str, org_name: str) -> None:
        org = _org(settings, org_name)
        if org is None or not visibility.may_see(user, org):
            log.info("Home: %s may not check %r", user, org_name)
            publish(user)
            return
        enqueue_reads(conn, [ReadJob(read_jobs.status_job, org.name,
                                     {"org": org.name, "kind": "status", "home_user": user,
                                      "requested_by": user},
                                     on_success=home_tab.ON_CHECKED,
                                     on_failure=home_tab.ON_CHECK_FAILED)])
        publish(user, (org.name,))

    def plan(user: str, org_name: str, view_id: str) -> None:
        org = _org(settings, org_name)
        if org is None or not visibility.may_see(user, org):
            app.client.views_update(view_id=view_id, view=plan_modal(org_name, text=(
                f"You may not see the plan of {escape(org_name)}.")))
            return
        enqueue_reads(conn, [ReadJob(read_jobs.plan_job, org.name,
                                     {"org": org.name, "kind": "plan", "view_id": view_id,
                                      "requested_by": user},
                                     on_success=home_tab.ON_PLAN,
                                     on_failure=home_tab.ON_PLAN_FAILED)])

    @app.event("app_home_opened")
    def home_opened(event: dict[str, Any]) -> None:
        if event.get("tab") != "home" or not event.get("user"):
            return  # the Messages tab opens this event too
        after_ack.submit(partial(publish, str(event["user"])), None, "Home tab")

    @app.action(CHECK_NOW_ACTION)
    def check_now(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        after_ack.submit(partial(check, body["user"]["id"], _value(body)), None,
                         "Home check now")

    @app.action(OPEN_PLAN_ACTION)
    def open_plan(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        org_name = _value(body)
        try:  # now: the trigger_id is good for 3 s only
            opened = client.views_open(trigger_id=body["trigger_id"], view=plan_reading(org_name))
        except Exception as exc:
            after_ack.failed(exc, None, "Home plan view")
            return
        after_ack.submit(partial(plan, body["user"]["id"], org_name,
                                 str(opened["view"]["id"])), None, "Home plan")

    return visibility


def _value(body: dict[str, Any]) -> str:
    return str((body.get("actions") or [{}])[0].get("value") or "")


def _org(settings: Settings, name: str) -> Any:
    try:
        return settings.org(name)
    except ConfigError:
        return None
