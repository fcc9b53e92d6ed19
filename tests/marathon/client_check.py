#!/usr/bin/env python3
"""Drives a Plinth master with the PyPI `marathon` client (0.13.0), unchanged, as a user
would: every call the client offers that Plinth supports, with the results a user would
check (ids, counts, states). One line per call; the first failure exits non-zero.

Run by tests/e2e/marathon_client.rs:
    client_check.py --master http://MASTER:8080 --callback-host IP

`--callback-host` is an address of this machine the master can reach: the event
subscription's callback server listens there.
"""
import argparse
import collections
import collections.abc
import http.server
import importlib.metadata
import json
import sys
import threading
import time
import traceback

# marathon 0.13.0 encodes nested models (containers, health checks, a group's apps) with
# `collections.Iterable`, which Python 3.10 removed; this restores the alias so the client
# runs unchanged on the Python of the machine. It touches nothing of the client or of Plinth.
if not hasattr(collections, "Iterable"):
    collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient  # noqa: E402
from marathon.exceptions import MarathonHttpError, NotFoundError  # noqa: E402
from marathon.models import MarathonApp, MarathonDeployment, MarathonGroup, MarathonInfo, MarathonTask  # noqa: E402
from marathon.models.app import MarathonHealthCheck  # noqa: E402
from marathon.models.events import (  # noqa: E402
    MarathonApiPostEvent,
    MarathonDeploymentInfo,
    MarathonDeploymentSuccess,
    MarathonEventStreamAttached,
    MarathonStatusUpdateEvent,
)
from marathon.models.queue import MarathonQueueItem  # noqa: E402

WEB = "/client/web"
STUCK = "/client/stuck"
GROUP = "/client-group"
SERVE = "exec python3 -m http.server $PORT0"


class Failed(Exception):
    pass


def ok(call, detail):
    print(f"ok    {call:<34} {detail}", flush=True)


def check(condition, message):
    if not condition:
        raise Failed(message)


def wait(what, probe, timeout=120):
    """Polls `probe` until it returns something true; returns it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            result = probe()
            if result:
                return result
            last = result
        except (MarathonHttpError, NotFoundError) as e:
            last = e
        time.sleep(0.5)
    raise Failed(f"timed out waiting for {what} (last: {last!r})")


def running(client, app_id, count):
    """The app's tasks once exactly `count` run and no deployment holds it."""
    app = client.get_app(app_id)
    tasks = [t for t in app.tasks if t.state == "TASK_RUNNING"]
    if len(tasks) == count and app.tasks_running == count and not app.deployments and app.instances == count:
        return tasks
    return None


def no_deployments(client, app_id):
    return not [d for d in client.list_deployments() if app_id in d.affected_apps]


class Events:
    """`event_stream()` read in the background, as a user would iterate it."""

    def __init__(self, client):
        self.events = []
        self.error = None
        self.thread = threading.Thread(target=self.read, args=(client,), daemon=True)
        self.thread.start()

    def read(self, client):
        try:
            for event in client.event_stream():
                self.events.append(event)
        except Exception as e:  # the stream must not fail on any event Plinth sends
            self.error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"

    def of(self, clazz):
        return [e for e in self.events if isinstance(e, clazz)]


class Callbacks(http.server.BaseHTTPRequestHandler):
    """The receiving end of the event subscription."""

    received = []

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        try:
            Callbacks.received.append(json.loads(body))
        except ValueError:
            pass
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def web_app(instances, env=None, cmd=SERVE):
    return MarathonApp(
        cmd=cmd,
        cpus=0.1,
        mem=32,
        instances=instances,
        labels={"team": "qa"},
        env=env or {"VERSION": "1"},
        health_checks=[
            MarathonHealthCheck(
                protocol="HTTP",
                path="/",
                port_index=0,
                grace_period_seconds=30,
                interval_seconds=1,
                timeout_seconds=1,
                max_consecutive_failures=3,
            )
        ],
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--master", required=True)
    parser.add_argument("--callback-host", required=True)
    args = parser.parse_args()
    client = MarathonClient(args.master, timeout=20)
    print(f"marathon client {importlib.metadata.version('marathon')} against {args.master}", flush=True)

    # --- the server
    check(b"pong" in client.ping(), "ping answers pong")
    ok("ping", "pong")
    info = client.get_info()
    check(isinstance(info, MarathonInfo), "get_info returns a MarathonInfo")
    check(info.leader and info.http_config.http_port == 8080, f"leader and http_port: {info.leader} {info.http_config.http_port}")
    check(info.zookeeper_config.zk_timeout and info.marathon_config.hostname, "zookeeper_config and marathon_config")
    check(info.event_subscriber.type == "http_callback", f"event_subscriber: {info.event_subscriber.type}")
    ok("get_info", f"{info.name} {info.version}, leader {info.leader}")
    leader = client.get_leader()
    check(leader.get("leader") == info.leader, f"get_leader agrees with get_info: {leader}")
    ok("get_leader", leader["leader"])

    # --- events: the stream, and a callback subscriber
    events = Events(client)
    server = http.server.ThreadingHTTPServer((args.callback_host, 0), Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    callback = f"http://{args.callback_host}:{server.server_address[1]}/callback"
    subscribed = client.create_event_subscription(callback)
    check(subscribed.get("eventType") == "subscribe_event" and subscribed.get("callbackUrl") == callback, f"{subscribed}")
    ok("create_event_subscription", callback)
    check(callback in client.list_event_subscriptions(), "the callback is listed")
    ok("list_event_subscriptions", f"{len(client.list_event_subscriptions())} callback(s)")

    # --- apps
    created = client.create_app(WEB, web_app(2))
    check(isinstance(created, MarathonApp) and created.id == WEB and created.instances == 2, f"create_app: {created}")
    check(created.deployments, "the new app has its deployment")
    ok("create_app", f"{created.id}, {created.instances} instances, deployment {created.deployments[0].id}")
    tasks = wait(f"2 running tasks of {WEB}", lambda: running(client, WEB, 2))
    check(all(t.health_check_results and t.health_check_results[0].alive for t in tasks), "tasks healthy")
    app = client.get_app(WEB)
    check(app.tasks_healthy == 2 and app.tasks_unhealthy == 0 and app.version, f"counts: {app.tasks_healthy}")
    ok("get_app", f"{app.id}: {app.tasks_running} running, {app.tasks_healthy} healthy, version {app.version}")

    ids = [a.id for a in client.list_apps()]
    check(WEB in ids, f"list_apps: {ids}")
    ok("list_apps", f"{ids}")
    embedded = [a for a in client.list_apps(embed_tasks=True) if a.id == WEB]
    check(embedded and len(embedded[0].tasks) == 2 and all(isinstance(t, MarathonTask) for t in embedded[0].tasks), "embed_tasks")
    ok("list_apps(embed_tasks=True)", f"{WEB} with {len(embedded[0].tasks)} tasks")
    by_cmd = [a.id for a in client.list_apps(cmd="http.server")]
    by_label = [a.id for a in client.list_apps(label="team==qa")]
    check(by_cmd == [WEB] and by_label == [WEB], f"filters: {by_cmd} {by_label}")
    ok("list_apps(cmd=, label=)", f"{by_cmd} {by_label}")
    failures = client.get_app(WEB, embed_last_task_failure=True, embed_readiness=True, embed_counts=True)
    check(failures.id == WEB, "get_app with embeds")
    ok("get_app(embed_*=True)", f"last failure {failures.last_task_failure}")

    # --- tasks
    all_tasks = client.list_tasks()
    web_tasks = client.list_tasks(WEB)
    check(len(web_tasks) == 2 and all(t.app_id == WEB and t.ports and t.service_ports and t.host for t in web_tasks), "list_tasks(app)")
    check({t.id for t in web_tasks} <= {t.id for t in all_tasks}, "list_tasks() has them")
    ok("list_tasks", f"{len(all_tasks)} in all, {len(web_tasks)} of {WEB} on {sorted({t.host for t in web_tasks})}")
    endpoints = [e for e in client.list_endpoints() if e.app_id == WEB]
    check(len(endpoints) == 2 and all(e.task_port and e.service_port for e in endpoints), f"list_endpoints: {endpoints}")
    ok("list_endpoints", ", ".join(f"{e.host}:{e.task_port} (service {e.service_port})" for e in endpoints))

    # --- a new version, versions, rollback
    update = client.update_app(WEB, web_app(2, env={"VERSION": "2"}))
    check(update.get("deploymentId") and update.get("version"), f"update_app: {update}")
    deployments = client.list_deployments()
    check(all(isinstance(d, MarathonDeployment) for d in deployments), "list_deployments parses")
    ok("update_app", f"deployment {update['deploymentId']}")
    ok("list_deployments", ", ".join(f"{d.id} {d.affected_apps} step {d.current_step}/{d.total_steps}" for d in deployments) or "none left")
    wait(f"{WEB} on version 2", lambda: running(client, WEB, 2) and client.get_app(WEB).env.get("VERSION") == "2")
    versions = client.list_versions(WEB)
    check(len(versions) >= 2, f"list_versions: {versions}")
    ok("list_versions", f"{len(versions)} versions, newest {versions[0]}")
    first = client.get_version(WEB, versions[-1])
    check(isinstance(first, MarathonApp) and first.env.get("VERSION") == "1", f"get_version: {first.env}")
    ok("get_version", f"{versions[-1]}: VERSION={first.env.get('VERSION')}")
    rolled = client.rollback_app(WEB, versions[-1])
    check(rolled.get("deploymentId"), f"rollback_app: {rolled}")
    wait(f"{WEB} back on version 1", lambda: running(client, WEB, 2) and client.get_app(WEB).env.get("VERSION") == "1")
    ok("rollback_app", f"to {versions[-1]}")

    # --- scale, restart, bulk update
    scaled = client.scale_app(WEB, instances=3)
    check(scaled.get("deploymentId"), f"scale_app: {scaled}")
    wait(f"3 running tasks of {WEB}", lambda: running(client, WEB, 3))
    ok("scale_app(instances=3)", "3 running")
    client.scale_app(WEB, delta=-1)
    wait(f"2 running tasks of {WEB}", lambda: running(client, WEB, 2))
    ok("scale_app(delta=-1)", "2 running")
    before = {t.id for t in client.list_tasks(WEB)}
    restarted = client.restart_app(WEB)
    check(restarted.get("deploymentId"), f"restart_app: {restarted}")
    wait("every task replaced", lambda: running(client, WEB, 2) and not ({t.id for t in client.list_tasks(WEB)} & before))
    ok("restart_app", "every task replaced")
    bulk = client.update_apps([MarathonApp(id=WEB, instances=2, labels={"team": "qa", "bulk": "yes"})])
    check(bulk.get("deploymentId"), f"update_apps: {bulk}")
    wait("the bulk update", lambda: running(client, WEB, 2) and client.get_app(WEB).labels.get("bulk") == "yes")
    ok("update_apps", "labels updated")

    # --- kills
    victim = client.list_tasks(WEB)[0]
    killed = client.kill_task(WEB, victim.id)
    check(isinstance(killed, MarathonTask) and killed.id == victim.id, f"kill_task: {killed}")
    wait("the killed task replaced", lambda: running(client, WEB, 2) and victim.id not in {t.id for t in client.list_tasks(WEB)})
    ok("kill_task", f"{victim.id} killed and replaced")
    victim = client.list_tasks(WEB)[0]
    answer = client.kill_task(WEB, victim.id, scale=True)
    check(isinstance(answer, dict) and answer.get("deploymentId"), f"kill_task(scale=True): {answer}")
    wait(f"{WEB} scaled to 1", lambda: running(client, WEB, 1))
    ok("kill_task(scale=True)", f"{victim.id} killed, 1 instance left")
    client.scale_app(WEB, instances=2)
    wait(f"2 running tasks of {WEB}", lambda: running(client, WEB, 2))
    before = {t.id for t in client.list_tasks(WEB)}
    killed = client.kill_tasks(WEB)
    check(isinstance(killed, list) and {t.id for t in killed} == before, f"kill_tasks: {killed}")
    wait("every task replaced", lambda: running(client, WEB, 2) and not ({t.id for t in client.list_tasks(WEB)} & before))
    ok("kill_tasks", f"{len(killed)} killed and replaced")
    victim = client.list_tasks(WEB)[0]
    check(client.kill_given_tasks([victim.id]), "kill_given_tasks answers 200")
    wait("the task replaced", lambda: running(client, WEB, 2) and victim.id not in {t.id for t in client.list_tasks(WEB)})
    ok("kill_given_tasks", f"{victim.id} killed and replaced")

    # --- deployments that do not finish: rollback, then force
    stuck = client.update_app(WEB, web_app(2, env={"VERSION": "broken"}, cmd="sleep 1000"))
    check(stuck.get("deploymentId"), f"update_app: {stuck}")
    time.sleep(2)
    listed = [d for d in client.list_deployments() if d.id == stuck["deploymentId"]]
    check(listed and WEB in listed[0].affected_apps and listed[0].current_actions, f"the stuck deployment is listed: {listed}")
    rollback = client.delete_deployment(stuck["deploymentId"])
    check(rollback.get("deploymentId") and rollback["deploymentId"] != stuck["deploymentId"], f"delete_deployment: {rollback}")
    wait(f"{WEB} rolled back", lambda: running(client, WEB, 2) and client.get_app(WEB).env.get("VERSION") == "1")
    ok("delete_deployment", f"rolled back by {rollback['deploymentId']}")
    created = client.create_app(STUCK, MarathonApp(cmd="sleep 1000", cpus=0.1, mem=100000, instances=1))
    check(created.id == STUCK, "create_app of an app no agent can hold")
    queue = wait(f"{STUCK} in the queue", lambda: [q for q in client.list_queue() if q.app.id == STUCK])
    check(isinstance(queue[0], MarathonQueueItem) and queue[0].count == 1 and queue[0].delay is not None, f"list_queue: {queue}")
    ok("list_queue", f"{queue[0].app.id}: {queue[0].count} waiting, overdue {queue[0].delay.overdue}")
    offers = client.list_queue(embed_last_unused_offers=True)
    check([q for q in offers if q.app.id == STUCK], "list_queue(embed_last_unused_offers=True)")
    ok("list_queue(embed_last_unused_offers)", f"{len(offers)} item(s)")
    client.reset_delay(STUCK)
    ok("reset_delay", STUCK)
    held = [d for d in client.list_deployments() if STUCK in d.affected_apps]
    check(held, f"{STUCK} has a deployment")
    check(client.delete_deployment(held[0].id, force=True) == {}, "delete_deployment(force=True) answers {}")
    wait("the forced deployment gone", lambda: no_deployments(client, STUCK))
    ok("delete_deployment(force=True)", f"{held[0].id} dropped")
    deleted = client.delete_app(STUCK)
    check(deleted.get("deploymentId"), f"delete_app: {deleted}")
    wait(f"{STUCK} gone", lambda: STUCK not in [a.id for a in client.list_apps()])
    ok("delete_app", STUCK)

    # --- groups
    group = MarathonGroup(id=GROUP, apps=[MarathonApp(id="db", cmd="sleep 1000", cpus=0.05, mem=16, instances=1)])
    answer = client.create_group(group)
    check(answer.get("deploymentId") and answer.get("version"), f"create_group: {answer}")
    ok("create_group", f"{GROUP}, deployment {answer['deploymentId']}")
    wait(f"{GROUP}/db running", lambda: running(client, f"{GROUP}/db", 1))
    groups = [g.id for g in client.list_groups()]
    check(GROUP in groups and "/client" in groups, f"list_groups: {groups}")
    ok("list_groups", f"{groups}")
    got = client.get_group(GROUP)
    check(isinstance(got, MarathonGroup) and [a.id for a in got.apps] == [f"{GROUP}/db"], f"get_group: {got.apps}")
    ok("get_group", f"{got.id}: {[a.id for a in got.apps]}")
    scaled = client.scale_group(GROUP, 2)
    check(scaled.get("deploymentId"), f"scale_group: {scaled}")
    wait(f"{GROUP}/db scaled to 2", lambda: running(client, f"{GROUP}/db", 2))
    ok("scale_group", "2 instances")
    changed = client.update_group(GROUP, MarathonGroup(apps=[MarathonApp(id="db", cmd="sleep 1001", cpus=0.05, mem=16, instances=1)]), force=True)
    check(changed.get("deploymentId"), f"update_group: {changed}")
    wait(f"{GROUP}/db updated", lambda: running(client, f"{GROUP}/db", 1) and client.get_app(f"{GROUP}/db").cmd == "sleep 1001")
    ok("update_group", "db: sleep 1001")
    gone = client.delete_group(GROUP)
    check(gone.get("deploymentId") or gone.get("version"), f"delete_group: {gone}")
    wait(f"{GROUP} gone", lambda: GROUP not in [g.id for g in client.list_groups()])
    ok("delete_group", GROUP)

    # --- metrics
    metrics = client.get_metrics()
    check(isinstance(metrics, dict) and {"version", "counters", "gauges", "histograms", "meters", "timers"} <= set(metrics), f"{list(metrics)}")
    check(metrics["gauges"].get("plinth.apps", {}).get("value", 0) >= 1, "the apps gauge")
    ok("get_metrics", f"{len(metrics['counters'])} counters, {len(metrics['gauges'])} gauges")

    # --- what the event stream and the callback saw while apps deployed
    wait("the event stream to see the deployments", lambda: events.error or (events.of(MarathonDeploymentSuccess) and events.of(MarathonStatusUpdateEvent)), timeout=30)
    check(events.error is None, f"event_stream failed: {events.error}")
    check(events.of(MarathonEventStreamAttached), "event_stream_attached first")
    posted = [e.app_definition["id"] for e in events.of(MarathonApiPostEvent)]
    check(WEB in posted, f"api_post_event for {WEB}: {posted}")
    started = [e for e in events.of(MarathonStatusUpdateEvent) if e.app_id == WEB and e.task_status == "TASK_RUNNING"]
    check(started, "status_update_event TASK_RUNNING")
    check(events.of(MarathonDeploymentInfo) and events.of(MarathonDeploymentSuccess), "deployment_info and deployment_success")
    kinds = collections.Counter(type(e).__name__ for e in events.events)
    ok("event_stream", f"{len(events.events)} events: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    wait("events at the callback", lambda: [e for e in Callbacks.received if e.get("eventType") == "status_update_event"], timeout=30)
    unsubscribed = client.delete_event_subscription(callback)
    check(unsubscribed.get("eventType") == "unsubscribe_event", f"delete_event_subscription: {unsubscribed}")
    check(callback not in client.list_event_subscriptions(), "the callback is gone")
    ok("delete_event_subscription", f"{len(Callbacks.received)} events had arrived at the callback")

    deleted = client.delete_app(WEB)
    check(deleted.get("deploymentId"), f"delete_app: {deleted}")
    wait(f"{WEB} gone", lambda: WEB not in [a.id for a in client.list_apps()])
    ok("delete_app", WEB)
    print("all calls passed")


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"FAIL  {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # a client exception (e.g. a field the client refuses) is a failure too
        print(f"FAIL  {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        sys.exit(1)
