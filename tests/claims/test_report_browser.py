"""The dashboard in a real headless browser (Debian's chromium + chromium-driver, driven by selenium).

A 240-claim report is loaded from ``file://``; the verdict filter, the search box and a summary link must leave
exactly the rows the JSON says; a screenshot of the summary is saved to ``reports/report-summary.png`` (a CI
artifact). .ci/run installs chromium; without it this test skips and says so.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from reprolab.claims.history import History, RunInfo
from reprolab.claims.report import write_reports
from reprolab.claims.runner import ClaimResult

pytestmark = pytest.mark.fast

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports"
VERDICTS = ["reproduced", "reproduced", "reproduced", "refuted", "not-reproduced", "inconclusive", "error"]
DOCUMENTS = ["000_a.txt", "001_b.txt", "002_c.txt", "003_d.txt", "004_e.txt"]


def _results(n: int = 240) -> list[ClaimResult]:
    out = []
    for i in range(n):
        verdict = VERDICTS[i % len(VERDICTS)]
        out.append(ClaimResult(
            id=f"claim-{i:03d}", file="expectations/x.yaml", line=i, document=DOCUMENTS[i % 5],
            kind="recorded" if i % 4 == 0 else "reproduce", scale="gpu" if i % 6 == 0 else "fast",
            statement=f"statement {i}", quote=f"**+0.{i:03d}** of | a | table |", expected="mean(v) >= 0.5",
            why="w", metric="v", statistic="fraction" if i % 5 == 0 else "mean", interval="point",
            bounds=(0.5, float("inf")), recorded="reproduced", verdict=verdict, observed=0.4 + (i % 10) / 10,
            ci=(0.3, 0.9), n_seeds=5, samples=[1.0, 1.0, 0.0, 1.0, 1.0] if i % 5 == 0 else [0.4, 0.5, 0.6, 0.7, 0.8],
        ))
    return out


@pytest.fixture(scope="module")
def driver():  # type: ignore[no-untyped-def]
    missing = "chromium / chromedriver not installed (Debian: apt-get install chromium chromium-driver)"
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("REPROLAB_REQUIRE_BROWSER") == "1":  # .ci/run installs them: absent there is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    history = History(root / "h.sqlite")
    results = _results()
    for day in (1, 2, 3):
        run = RunInfo(f"run{day}", f"2026-01-0{day}T00:00:00", f"{day:040x}", {}, "m", "test")
        history.record(run, results)
    write_reports(root / "reports", run, [r.to_dict() for r in results], history=history,
                  suite=[r.id for r in results])
    return root / "reports"


def _visible(driver) -> int:  # type: ignore[no-untyped-def]
    """Rows the browser lays out (a row hidden by the filter has no box); one round trip, not one per row."""
    return int(driver.execute_script(
        "return Array.prototype.filter.call(document.querySelectorAll('article.claim'),"
        " function (row) { return row.getClientRects().length > 0; }).length;"
    ))


def test_verdict_filter_search_and_summary_links_show_the_json_counts(driver, report: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    claims = json.loads((report / "latest.json").read_text())["claims"]
    counts = Counter(c["verdict"] for c in claims)
    driver.get((report / "latest.html").as_uri())
    assert driver.find_element(By.ID, "shown").text == str(len(claims))
    assert _visible(driver) == len(claims)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.find_element(By.ID, "summary").screenshot(str(ARTIFACTS / "report-summary.png"))

    verdict = Select(driver.find_element(By.ID, "f-verdict"))
    for value in ("refuted", "reproduced", "error"):
        verdict.select_by_value(value)
        assert _visible(driver) == counts[value], value
        assert driver.find_element(By.ID, "shown").text == str(counts[value])

    Select(driver.find_element(By.ID, "f-note")).select_by_value("002")
    expected = sum(1 for c in claims if c["verdict"] == "error" and c["document"].startswith("002"))
    assert _visible(driver) == expected

    driver.find_element(By.ID, "f-reset").click()
    search = driver.find_element(By.ID, "f-q")
    search.send_keys("claim-01")
    assert _visible(driver) == sum(1 for c in claims if "claim-01" in c["id"])

    driver.find_element(By.ID, "f-reset").click()
    driver.find_element(By.CSS_SELECTOR, '.card[data-set="status=mismatch"]').click()
    assert _visible(driver) == sum(1 for c in claims if not c["matches"])
    first = driver.find_element(By.CSS_SELECTOR, "article.claim:not([hidden])")
    assert first.get_attribute("data-status") == "mismatch" and first.is_displayed()
    assert not driver.find_element(By.CSS_SELECTOR, "article.claim[hidden]").is_displayed()
    driver.find_element(By.ID, "f-close").click()
    assert driver.execute_script("return document.querySelectorAll('details.more[open]').length") == 0
    assert (ARTIFACTS / "report-summary.png").stat().st_size > 1000
