"""End to end through the real webserver and a real browser.

One ``dagster dev`` (webserver + daemon) on 127.0.0.1 and a free port, with the
project's workspace.yaml, a temporary DAGSTER_HOME (the project's instance
settings) and DATA_DIR, one symbol and a short partition set:

- through the GraphQL API: a ``daily_refresh`` run of the first day (market,
  staging, features, labels) is launched and succeeds, the warehouse holds that
  day's candles and feature rows, and a schedule is turned on;
- in headless Chromium (Debian's ``chromium``, driven by Playwright): the asset
  graph opens, ``monitoring/drift`` is materialized by clicking and its run
  succeeds, the Automation page lists every schedule and sensor; screenshots go
  to ``$CONVTRADE_TEST_ARTIFACTS`` (default ``<tmp>/screenshots``).

Only the process group this test started is stopped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
START = "2026-11-20"
LOCATION = {"repositoryLocationName": "convtrade", "repositoryName": "__repository__"}
SCHEDULES = ("daily_refresh_schedule", "nightly_retrain_schedule")
SENSORS = ("drift_retrain", "signals_after_refresh", "fail_dead_runs")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dagit:
    def __init__(self, url: str):
        self.url = url

    def gql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        assert "errors" not in out, out["errors"]
        return out["data"]

    def wait_run(self, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.gql("query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                              {"id": run_id})["runOrError"]["status"]
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(2)
        raise AssertionError(f"run {run_id} did not finish within {timeout} s")


@pytest.fixture(scope="module")
def dagit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    home, data = tmp / "dagster_home", tmp / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster_instance.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DATA_DIR": str(data), "CONVTRADE_SYMBOLS": "BTCUSDT",
           "CONVTRADE_START": START, "PYTHONWARNINGS": "ignore", "DAGSTER_DISABLE_TELEMETRY": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("CONVTRADE_DATA_DIR", None)
    log = open(tmp / "dagster_dev.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
                             "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    client = Dagit(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 420
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"dagster dev exited ({proc.returncode}): {(tmp / 'dagster_dev.log').read_text()[-3000:]}")
            try:
                loc = client.gql("{ workspaceOrError { ... on Workspace { locationEntries { name "
                                 "locationOrLoadError { __typename } } } } }", timeout=10)
                entries = loc["workspaceOrError"]["locationEntries"]
                if entries and entries[0]["locationOrLoadError"] and \
                        entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation":
                    break
                if entries and entries[0]["locationOrLoadError"] and \
                        entries[0]["locationOrLoadError"]["__typename"] == "PythonError":
                    raise AssertionError(f"the code location failed to load: {loc}")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("dagster dev did not serve the code location within 420 s")
            time.sleep(3)
        yield client, data, tmp
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, nothing else
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        log.close()


def test_graphql_materializes_the_market_and_features_and_turns_a_schedule_on(dagit):
    client, data, _ = dagit
    launched = client.gql(
        "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
        "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } "
        "... on RunConfigValidationInvalid { errors { message } } } }",
        {"p": {"selector": {**LOCATION, "jobName": "daily_refresh"},
               "executionMetadata": {"tags": [{"key": "dagster/partition", "value": START[:8] + "01"}]}}})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert client.wait_run(launched["run"]["runId"]) == "SUCCESS"
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        candles = con.execute("select count(*) from raw.candles where symbol = 'BTCUSDT' and cast(ts as date) = ?",
                              [START]).fetchall()[0][0]
        features = con.execute("select count(*) from features.candle_features where cast(ts as date) = ?",
                               [START]).fetchall()[0][0]
    assert candles == 24 and features == 24
    selector = {**LOCATION, "scheduleName": "daily_refresh_schedule"}
    started = client.gql("mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename "
                         "... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }",
                         {"s": selector})["startSchedule"]
    assert started["__typename"] == "ScheduleStateResult", started
    state = client.gql("query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { "
                       "... on Schedule { scheduleState { status } } } }", {"s": selector})
    assert state["scheduleOrError"]["scheduleState"]["status"] == "RUNNING"


def test_browser_materializes_by_clicking_and_lists_the_automation(dagit, chromium):
    client, _, tmp = dagit
    shots = Path(os.environ.get("CONVTRADE_TEST_ARTIFACTS", tmp / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(f"{client.url}/asset-groups")
    page.get_by_text("monitoring", exact=False).first.wait_for()
    page.wait_for_timeout(3000)
    page.screenshot(path=str(shots / "asset_graph.png"))

    page.goto(f"{client.url}/assets/monitoring/drift")
    page.locator("button").filter(has_text=re.compile(r"^Materialize$")).first.click()
    # the models upstream are not materialized yet: the UI asks first
    confirm = page.get_by_role("button", name="Confirm")
    confirm.wait_for()
    page.screenshot(path=str(shots / "materialize_confirm.png"))
    confirm.click()
    # the run starts; find it through the API and wait for it
    deadline = time.monotonic() + 120
    runs = []
    while not runs and time.monotonic() < deadline:
        runs = client.gql('{ runsOrError(filter: {}) { ... on Runs { results { runId status assetSelection '
                          '{ path } } } } }')["runsOrError"]["results"]
        runs = [r for r in runs if (r["assetSelection"] or []) == [{"path": ["monitoring", "drift"]}]]
        time.sleep(2)
    assert runs, "clicking Materialize started no run of monitoring/drift"
    assert client.wait_run(runs[0]["runId"]) == "SUCCESS"
    page.goto(f"{client.url}/runs/{runs[0]['runId']}")
    page.get_by_text("Success", exact=False).first.wait_for()
    page.screenshot(path=str(shots / "materialized_run.png"))

    page.goto(f"{client.url}/automation")
    for name in (*SCHEDULES, *SENSORS):
        page.get_by_text(name, exact=True).first.wait_for()
    page.screenshot(path=str(shots / "automation.png"), full_page=True)
