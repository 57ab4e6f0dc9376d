"""eqn.app in a real browser (headless Chromium from the Debian packages, driven by Selenium): the intensities shown
for a text are eqn.load(...).annotate's, an uploaded file comes back row for row as eqn.annotate writes it, a broken
file shows eqn.annotate's one-line error, and every tab renders (screenshots)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ROOT

TRICKY = 'id,text\n1,"She said ""no"", then laughed 😂"\n2,\n3,"thanks, friend"\n4,I am so angry right now\n'


def missing() -> str | None:
    for module, package in (("gradio", 'pip install "eqn[app]"'), ("selenium", 'pip install "eqn[app]"')):
        try:
            __import__(module)
        except ImportError:
            return f"needs {module} ({package})"
    for binary, package in (("chromium", "chromium"), ("chromedriver", "chromium-driver")):
        if shutil.which(binary) is None:
            return f"needs {binary}: apt-get install {package} (not installed)"
    return None


browser = pytest.mark.skipif(missing() is not None, reason=str(missing()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def page(trained_run, tmp_path):
    """eqn.app on a free local port with the shared small run's EQN (compared with its CoEQN), and a browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    port = free_port()
    ckpt, other = trained_run / "checkpoints" / "eqn.ckpt", trained_run / "checkpoints" / "coeqn.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eqn.app",
            f"ckpt={ckpt}",
            f"compare={other}",
            f"runs={trained_run.parent}",
            f"port={port}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read(100)
            break
        except OSError:
            if app.poll() is not None or time.monotonic() > deadline:
                app.kill()
                pytest.fail(f"eqn.app did not start: {app.stdout.read()[-2000:]}")
            time.sleep(0.3)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1700"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.get(url)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text textarea"))
    try:
        yield driver, ckpt, other, tmp_path
    finally:
        driver.quit()
        app.terminate()
        app.wait(timeout=30)


def wait_value(driver, css: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def value(d):
        found = d.find_elements(By.CSS_SELECTOR, f"{css} textarea, {css} input")
        return found and found[0].get_attribute("value")

    WebDriverWait(driver, timeout).until(value)
    return value(driver)


def table(driver, elem_id: str) -> list[list[str]]:
    """The rows a Gradio table shows (its grid cells by row)."""
    cells = driver.execute_script(
        f"return [...document.querySelectorAll('#{elem_id} [role=gridcell]')]"
        ".map(c => [+c.dataset.row, +c.dataset.col, c.innerText.trim()])"
    )
    rows: dict = {}
    for r, c, text in cells:
        rows.setdefault(r, {})[c] = text
    return [[row[c] for c in sorted(row)] for _, row in sorted(rows.items())]


def type_text(driver, css: str, text: str) -> None:
    """Put text into a text box as typing would (ChromeDriver cannot type characters beyond the BMP, e.g. emoji)."""
    driver.execute_script(
        "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        css,
        text,
    )


def tab(driver, name: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{name}')]").click()
    time.sleep(0.5)


def check_one_text_shows_eqns_intensities_and_decisions(page):
    from selenium.webdriver.common.by import By

    import eqn

    driver, ckpt, _, shots = page
    text = "Thank you so much, I love this! 😊"
    type_text(driver, "#text textarea", text)
    driver.find_element(By.CSS_SELECTOR, "#annotate").click()
    shown = wait_value(driver, "#emotions")
    expected = eqn.load(str(ckpt)).annotate(text).iloc[0]
    assert shown.split(", ") == expected["emotions"].split(",")
    time.sleep(0.5)
    rows = table(driver, "numbers")
    assert len(rows) >= 5  # the rows in view: label, intensity, threshold, decided
    for label, intensity, _, decided in rows:
        assert float(intensity) == pytest.approx(float(expected[label]), abs=1e-9)
        assert (decided == "yes") == (label in expected["emotions"].split(","))
    intensities = [float(r[1]) for r in rows]
    assert intensities == sorted(intensities, reverse=True)  # strongest first
    driver.save_screenshot(str(shots / "one_text.png"))


def check_compare_shows_both_models_decisions(page):
    from selenium.webdriver.common.by import By

    import eqn

    driver, ckpt, other, shots = page
    tab(driver, "Compare models")
    text = "That was the most disappointing ending ever."
    type_text(driver, "#ctext textarea", text)
    driver.find_element(By.CSS_SELECTOR, "#compare").click()
    time.sleep(0.2)
    rows = []
    deadline = time.monotonic() + 60
    while not rows and time.monotonic() < deadline:
        rows = [r for r in table(driver, "differences") if r and r[0]]
        time.sleep(0.3)
    a, b = eqn.load(str(ckpt)).annotate(text).iloc[0], eqn.load(str(other)).annotate(text).iloc[0]
    label, ia, ib, diff = rows[0]
    assert (float(ia), float(ib)) == (pytest.approx(a[label]), pytest.approx(b[label]))
    assert float(diff) == pytest.approx(b[label] - a[label], abs=0.011)
    driver.save_screenshot(str(shots / "compare.png"))


def check_a_file_comes_back_as_eqn_annotate_writes_it_and_a_broken_one_shows_the_error(page):
    from selenium.webdriver.common.by import By

    from eqn.annotate import annotate_file
    from eqn.errors import DataError

    driver, ckpt, _, shots = page
    tab(driver, "A file")
    upload = shots / "tricky.csv"
    upload.write_text(TRICKY, encoding="utf-8")
    driver.find_element(By.CSS_SELECTOR, "#infile input[type=file]").send_keys(str(upload))
    time.sleep(1)
    driver.find_element(By.CSS_SELECTOR, "#annotate_file").click()
    assert wait_value(driver, "#status").startswith("4 rows annotated")
    link = driver.execute_script("return [...document.querySelectorAll('#outfile a')].map(a => a.href)")[0]
    got = urllib.request.urlopen(link, timeout=10).read().decode("utf-8")
    annotate_file(str(ckpt), str(upload), str(shots / "cli.csv"), progress=False)
    assert got.splitlines() == (shots / "cli.csv").read_text(encoding="utf-8").splitlines()  # row for row
    driver.save_screenshot(str(shots / "file.png"))
    broken = shots / "broken.csv"
    broken.write_text("id,text\n1,fine\n2,too,many,fields\n", encoding="utf-8")
    with pytest.raises(DataError) as cli:
        annotate_file(str(ckpt), str(broken), str(shots / "never.csv"), progress=False)
    driver.find_element(By.CSS_SELECTOR, "#infile button[aria-label='Clear']").click()
    driver.find_element(By.CSS_SELECTOR, "#infile input[type=file]").send_keys(str(broken))
    time.sleep(1)
    driver.find_element(By.CSS_SELECTOR, "#annotate_file").click()
    expected = f"broken.csv, line {cli.value.line}: {cli.value.problem}"
    deadline = time.monotonic() + 30
    while expected not in driver.find_element(By.TAG_NAME, "body").text and time.monotonic() < deadline:
        time.sleep(0.3)
    assert expected in driver.find_element(By.TAG_NAME, "body").text
    assert not (shots / "never.csv").exists()


def check_a_run_shows_its_metrics(page, trained_run):
    from selenium.webdriver.common.by import By

    driver, _, _, shots = page
    tab(driver, "A run")
    driver.execute_script("arguments[0].click()", driver.find_element(By.CSS_SELECTOR, "#show_run"))  # under a toast
    deadline = time.monotonic() + 30
    rows: list = []
    while not rows and time.monotonic() < deadline:
        rows = [r for r in table(driver, "run_metrics") if r and r[0]]
        time.sleep(0.3)
    assert {r[0] for r in rows} == {"coeqn", "eqn"}
    driver.save_screenshot(str(shots / "run.png"))
    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in ("one_text", "compare", "file", "run"))


@browser
def test_the_page_in_a_real_browser(page, trained_run):
    """One page, one browser (the steps share them): one text, compare, a file and a broken one, a run."""
    check_one_text_shows_eqns_intensities_and_decisions(page)
    check_compare_shows_both_models_decisions(page)
    check_a_file_comes_back_as_eqn_annotate_writes_it_and_a_broken_one_shows_the_error(page)
    check_a_run_shows_its_metrics(page, trained_run)


def test_a_file_over_max_rows_is_refused_before_any_work_and_nothing_is_written_beside_it(trained_run, tmp_path):
    from eqn.app import annotate_upload, find_models
    from eqn.errors import DataError
    from eqn.inference import Annotator

    ckpt = str(trained_run / "checkpoints" / "eqn.ckpt")
    model = Annotator.from_checkpoint(ckpt)
    upload = tmp_path / "user" / "texts.csv"
    upload.parent.mkdir()
    upload.write_text(TRICKY, encoding="utf-8")
    work = tmp_path / "page"
    work.mkdir()
    with pytest.raises(DataError, match="more than max_rows=3 rows"):
        annotate_upload(model, ckpt, str(upload), "text", work, max_rows=3)
    assert list(work.iterdir()) == []  # refused before any work
    output, frame = annotate_upload(model, ckpt, str(upload), "text", work, max_rows=4)
    assert output.is_relative_to(work) and len(frame) == 4
    assert sorted(p.name for p in upload.parent.iterdir()) == ["texts.csv"]  # the user's folder untouched

    txt = upload.parent / "lines.txt"  # plain text comes back as CSV: the text and one column a label
    txt.write_text("what a day\nthanks, friend 😀\n\n", encoding="utf-8")
    output, frame = annotate_upload(model, ckpt, str(txt), "text", work, max_rows=10)
    assert output.suffix == ".csv" and frame["text"].tolist() == ["what a day", "thanks, friend 😀", ""]
    models = find_models(trained_run.parent)  # run checkpoints and export folders under runs=
    assert ckpt in models and str(trained_run / "export" / "eqn") in models
