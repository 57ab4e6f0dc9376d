"""Screenshots of eqn.app's tabs for the README and docs/ (headless Debian Chromium, as tests/test_app.py):

    python experiments/app_screenshots.py [--ckpt builtin] [--compare <model>] [--out docs]

Writes <out>/app_one_text.png, app_compare.png and app_file.png (a small CSV of example texts annotated).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "I can't believe you remembered my birthday, thank you so much!",
    "Honestly I'm a bit nervous about tomorrow, but also kind of excited.",
    "That was the most disappointing ending, what a waste of time.",
    "Wow, I did not see that coming at all.",
    "Stop sending me these, it's really annoying.",
    "I miss her every single day.",
    "This is the best news I've heard all year!",
    "ok",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default="builtin")
    parser.add_argument("--compare", default=None)
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "eqn.app", f"ckpt={args.ckpt}", f"port={port}"]
    command += [f"compare={args.compare}"] if args.compare else []
    app = subprocess.Popen(command, cwd=ROOT)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1500"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    out = Path(args.out)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        driver.get(f"http://127.0.0.1:{port}")
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text textarea"))

        def put(css: str, text: str) -> None:
            driver.execute_script(
                "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
                "el.dispatchEvent(new Event('input', {bubbles: true}));",
                css,
                text,
            )

        def value(css: str) -> str:
            found = driver.find_elements(By.CSS_SELECTOR, f"{css} textarea, {css} input")
            return found[0].get_attribute("value") if found else ""

        put("#text textarea", TEXTS[1])
        driver.find_element(By.CSS_SELECTOR, "#annotate").click()
        WebDriverWait(driver, 120).until(lambda d: value("#emotions"))
        time.sleep(1)
        driver.save_screenshot(str(out / "app_one_text.png"))
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Compare models')]").click()
        put("#ctext textarea", TEXTS[1])
        driver.find_element(By.CSS_SELECTOR, "#compare").click()
        time.sleep(8)
        driver.save_screenshot(str(out / "app_compare.png"))
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'A file')]").click()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "examples.csv"
            path.write_text("text\n" + "".join(f'"{t}"\n' for t in TEXTS), encoding="utf-8")
            driver.find_element(By.CSS_SELECTOR, "#infile input[type=file]").send_keys(str(path))
            time.sleep(1)
            driver.find_element(By.CSS_SELECTOR, "#annotate_file").click()
            WebDriverWait(driver, 120).until(lambda d: value("#status"))
            time.sleep(2)
            driver.save_screenshot(str(out / "app_file.png"))
    finally:
        driver.quit()
        app.terminate()
        app.wait(timeout=30)
    print(f"wrote {out}/app_one_text.png, app_compare.png, app_file.png")


if __name__ == "__main__":
    main()
