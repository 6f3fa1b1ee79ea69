"""The Prefect UI as the task list, tested as a person sees it: Debian's Chromium, driven by
Playwright through its executable path, against a real `accelflow server` (Prefect server and
runner) started by these tests. Tasks come from the command line, from Prefect's API (as any
client would send them, unchecked) and from the deployment's run form filled in the browser.

Every page checked is also kept as a screenshot in test-output/ui/ (ACCELFLOW_SCREENSHOTS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import httpx
import pytest

from tests import modelzoo
from tests.flows.service.test_server import FAST, INFO, ROOT

SHOTS = os.environ.get("ACCELFLOW_SCREENSHOTS") or os.path.join(ROOT, "test-output", "ui")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TENSOR_LINE = "input_0:float32(1*3*16*16,2*3*16*16)"
SPEEDUP_BADGE = re.compile(r"Accelerated \d+\.\d\dx")
UI_WAIT_MS = 30_000


def chromium() -> str:
    path = os.environ.get("ACCELFLOW_BROWSER") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("the browser tests need Chromium: bash scripts/install_browser.sh (Debian's chromium), "
                    "or set ACCELFLOW_BROWSER to one")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=BROWSER_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_WAIT_MS)
    yield context.new_page()
    context.close()


def shot(page, name: str) -> None:
    """Keep what the page shows, once it has settled (no request for 0.5 s; the UI polls, so not forever)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeout:
        pass
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


def tab(page, name: str) -> None:
    page.locator("li.p-tab", has_text=name).first.click()


def form_field(page, label: str):
    """A property of the deployment's run form by its label ("Output" finds "Output (Optional)");
    the form's labels are not tied to their inputs, so get_by_label cannot find them."""
    return page.locator(
        "xpath=//div[contains(@class,'schema-form-property') and contains(@class,'p-label')]"
        "[./div[@class='p-label__header']//span[@class='schema-form-property__label' and "
        f"(normalize-space()='{label}' or normalize-space()='{label} (Optional)')]]")


def choose(page, label: str, option: str) -> None:
    """Pick an option of a select field (headless, a click does not open it; the arrow key does)."""
    form_field(page, label).locator("button.p-select-button__control").focus()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).click()


class Api:
    """Prefect's REST API of the test server: what the UI itself reads."""

    def __init__(self, api_url: str):
        self.http = httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30)

    def run_named(self, name: str) -> dict:
        runs = self.http.post("flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
        assert len(runs) == 1, f"{len(runs)} runs named {name!r}"
        return runs[0]

    def wait_final(self, name: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            runs = self.http.post("flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}}).json()
            if runs and runs[0]["state"] and runs[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return runs[0]
            assert time.monotonic() < deadline, f"{name} did not end within {timeout:.0f} s: {runs}"
            time.sleep(1)

    def wait_final_id(self, run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.http.get(f"flow_runs/{run_id}").raise_for_status().json()
            if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return run
            assert time.monotonic() < deadline, f"run {run_id} did not end within {timeout:.0f} s: {run}"
            time.sleep(1)

    def deployment_runs(self) -> list[dict]:
        body = {"deployments": {"id": {"any_": [self.deployment_id()]}}}
        return self.http.post("flow_runs/filter", json=body).raise_for_status().json()

    def artifacts(self, run_id: str) -> list[dict]:
        return self.http.post("artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()

    def deployment_id(self, name: str = "optimize/cpu", timeout: float = 120) -> str:
        """The deployment's id, once the server's runner has registered it."""
        deadline = time.monotonic() + timeout
        while (found := self.http.get(f"deployments/name/{name}")).status_code == 404:
            assert time.monotonic() < deadline, f"no deployment {name} after {timeout:.0f} s"
            time.sleep(1)
        return found.raise_for_status().json()["id"]


@pytest.fixture(scope="module")
def api(service):
    return Api(service.api_url)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("ui-model")
    modelzoo.tiny_cnn_torchscript(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def cli_tasks(service, repo, api, tmp_path_factory):
    """Four tasks from the command line: two alone, and one request for two versions."""
    out = str(tmp_path_factory.mktemp("ui-results"))
    for name in ("ui-first", "ui-second"):
        service.cli("optimize", "cnn@v1", *INFO, *FAST, "--repo", repo, "--output", out, "--name", name, "--submit")
    service.cli("optimize", "cnn@v1,v2", *INFO, *FAST, "--repo", repo, "--output", out, "--name", "ui-batch", "--submit")
    names = ["ui-first", "ui-second", "ui-batch-cnn-v1#1", "ui-batch-cnn-v2#2"]
    return {name: api.wait_final(name) for name in names}


def test_runs_list_shows_each_task_with_its_speedup(page, service, api, cli_tasks):
    page.goto(f"http://127.0.0.1:{service.port}/runs")
    for name, run in cli_tasks.items():
        assert run["state"]["type"] == "COMPLETED", run["state"]
        row = page.locator(".flow-run-list-item", has_text=name).first
        badge = row.locator(".state-badge")
        badge.wait_for()
        assert SPEEDUP_BADGE.fullmatch(badge.inner_text().strip()), badge.inner_text()
    page.locator(".flow-run-list-item", has_text="ui-first").first.scroll_into_view_if_needed()
    shot(page, "runs-list")


def test_run_header_shows_the_speedup_and_details_the_headline(page, service, cli_tasks):
    run = cli_tasks["ui-first"]
    page.goto(f"http://127.0.0.1:{service.port}/runs/flow-run/{run['id']}")
    badge = page.locator(".page-heading-flow-run .state-badge")
    badge.wait_for()
    assert badge.inner_text().strip() == run["state"]["name"] and SPEEDUP_BADGE.fullmatch(run["state"]["name"])
    shot(page, "run-header")
    tab(page, "Details")
    page.get_by_text(run["state"]["message"]).wait_for()
    assert re.fullmatch(r"\d+\.\d\dx faster · \S+ \S+ · accuracy passed", run["state"]["message"])
    shot(page, "run-details")


def test_artifacts_page_lists_every_task(page, service, api, cli_tasks):
    page.goto(f"http://127.0.0.1:{service.port}/artifacts")
    keys = []
    for run in cli_tasks.values():
        key = next(a["key"] for a in api.artifacts(run["id"]) if a["key"] and "-result-" in a["key"])
        keys.append(key)
        page.get_by_text(key, exact=True).first.wait_for()
    assert len(set(keys)) == len(keys)
    shot(page, "artifacts")


def test_report_renders_tensor_information_verbatim_with_its_plot(page, service, api, cli_tasks):
    run = cli_tasks["ui-second"]
    report = next(a for a in api.artifacts(run["id"]) if a["type"] == "markdown" and "-report-" in (a["key"] or ""))
    page.goto(f"http://127.0.0.1:{service.port}/artifacts/artifact/{report['id']}")
    page.get_by_text(TENSOR_LINE).first.wait_for()  # not `float32(1316,2316)` with emphasis
    plot = page.locator("img[alt='latency per shape point']")
    plot.wait_for()
    plot.scroll_into_view_if_needed()
    assert plot.evaluate("img => img.complete && img.naturalWidth > 100")
    shot(page, "report")
    speedup = page.get_by_text("speed-up", exact=False).first
    assert speedup.is_visible()


def test_batch_parent_shows_how_its_tasks_ended(page, service, api, cli_tasks):
    parent = api.run_named("ui-batch")
    table = next(a for a in api.artifacts(parent["id"]) if a["type"] == "table")
    rows = json.loads(table["data"])
    assert {r["name"] for r in rows} == {"ui-batch-cnn-v1#1", "ui-batch-cnn-v2#2"}
    page.goto(f"http://127.0.0.1:{service.port}/artifacts/artifact/{table['id']}")
    for row in rows:
        assert SPEEDUP_BADGE.fullmatch(row["state"]), row
        page.get_by_text(row["state"]).first.wait_for()
    shot(page, "batch-table")


def test_failed_run_shows_its_reason(page, service, api, model_folder, tmp_path):
    """A request sent unchecked (as any API client may) fails on the runner: its header says why."""
    body = {"name": "some-random-name", "parameters": {"request": {  # the run takes its task's name
        "name": "ui-wrong-name", "model": os.path.join(model_folder, "cnn.pt"),
        "tensor_info": ["wrong_name:float32(1*3*16*16)"],
        "output": str(tmp_path), "draws": 1, "bench_seconds": 0.3}}}
    api.http.post(f"deployments/{api.deployment_id()}/create_flow_run", json=body).raise_for_status()
    run = api.wait_final("ui-wrong-name")
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "wrong_name" in message and "Traceback" not in message
    page.goto(f"http://127.0.0.1:{service.port}/runs/flow-run/{run['id']}")
    badge = page.locator(".page-heading-flow-run .state-badge")
    badge.wait_for()
    assert badge.inner_text().strip() == run["state"]["name"] and run["state"]["name"].startswith("Failed: ")
    shot(page, "failed-header")
    tab(page, "Details")
    page.get_by_text("wrong_name", exact=False).first.wait_for()
    shot(page, "failed-details")
    tab(page, "Logs")
    logged = page.get_by_text("wrong_name", exact=False).last
    logged.wait_for()
    logged.scroll_into_view_if_needed()
    assert "Traceback" not in page.locator("body").inner_text()
    shot(page, "failed-logs")


def test_a_task_from_the_run_form_is_named_and_shown_like_the_cli_ones(page, service, api, model_folder, tmp_path):
    """Deployments -> optimize/cpu -> Run -> Custom run, filled in and submitted as a person does."""
    page.goto(f"http://127.0.0.1:{service.port}/deployments/deployment/{api.deployment_id()}/run")
    form_field(page, "Model").locator("textarea").fill(os.path.join(model_folder, "cnn.pt"))
    tensor_info = form_field(page, "Tensor Info")
    tensor_info.get_by_role("button", name="Add item").click()
    tensor_info.locator("textarea").last.fill(TENSOR_LINE)
    form_field(page, "Output").locator("textarea").fill(str(tmp_path / "results"))
    choose(page, "Level", "lossless")
    form_field(page, "Level").scroll_into_view_if_needed()
    shot(page, "run-form")
    before = {r["id"] for r in api.deployment_runs()}
    page.get_by_role("button", name="Submit", exact=True).click()
    page.wait_for_url(re.compile(r".*/deployments/deployment/[^/?]+(\?.*)?$"))  # the UI created the run
    created = [r for r in api.deployment_runs() if r["id"] not in before]
    assert len(created) == 1, created
    run = api.wait_final_id(created[0]["id"], timeout=600)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["name"] == "cnn-lossless", run["name"]  # renamed from the form's random name: <model>-<level>
    assert run["parameters"]["request"]["level"] == "lossless"
    assert os.path.isdir(tmp_path / "results" / "cnn-lossless")
    assert "cnn-lossless" in service.tasks()
    page.goto(f"http://127.0.0.1:{service.port}/runs")
    row = page.locator(".flow-run-list-item", has_text="cnn-lossless").first
    badge = row.locator(".state-badge")
    badge.wait_for()
    assert SPEEDUP_BADGE.fullmatch(badge.inner_text().strip()), badge.inner_text()
    row.scroll_into_view_if_needed()
    shot(page, "runs-list-with-form-task")
