"""Drives the auditor's page (/ui/) in Debian's headless Chromium through chromedriver
(selenium, pinned in scripts/lib.sh PY_TOOLS) and prints what the page showed as one JSON
object on stdout; the Rust test (tests/it/ui.rs) decides what that must be.

Environment: BASE (the server's URL), TOKEN (an auditor's bearer token), SHOTS (a directory for
the screenshots), PHASE: `tour` (a wrong token refused; sign in; keys and the custody report; the
audit log filtered by outcome; verification in the browser) or `verify` (sign in, verify only).
"""

import json
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ["BASE"]
TOKEN = os.environ["TOKEN"]
SHOTS = os.environ["SHOTS"]
PHASE = os.environ["PHASE"]
WAIT = 30


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1500,1000", "--force-device-scale-factor=1",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def text(d, element_id):
    return d.find_element(By.ID, element_id).text


def wait_text(d, element_id, predicate, what):
    try:
        WebDriverWait(d, WAIT).until(lambda d: predicate(text(d, element_id)))
    except Exception:
        sys.exit(f"timed out waiting for {what}; #{element_id} says {text(d, element_id)!r}")
    return text(d, element_id)


def shoot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name))


def sign_in(d, token):
    field = d.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    d.find_element(By.ID, "login-button").click()


def verify(d, shot):
    d.find_element(By.CSS_SELECTOR, "button[data-view=verify]").click()
    d.find_element(By.ID, "verify-run").click()
    verdict = wait_text(d, "verify-verdict", lambda t: t.startswith(("Intact", "NOT intact", "Could not")),
                        "the verification verdict")
    shoot(d, shot)
    return verdict


def storage(d):
    return d.execute_script(
        "return [window.localStorage.length, window.sessionStorage.length, document.cookie];")


def main():
    out = {}
    d = browser()
    try:
        d.get(f"{BASE}/ui/")
        WebDriverWait(d, WAIT).until(EC.element_to_be_clickable((By.ID, "login-button")))
        if PHASE == "tour":
            shoot(d, "01-login.png")
            sign_in(d, "cst_wrong_" + "A" * 43)
            out["wrong_token"] = wait_text(d, "status", lambda t: t.startswith("Sign-in failed"),
                                           "the refusal of a wrong token")
            out["nav_hidden_after_wrong_token"] = not d.find_element(By.ID, "nav").is_displayed()
        sign_in(d, TOKEN)
        wait_text(d, "status", lambda t: t == "Signed in.", "signing in")
        out["token_field_after_sign_in"] = d.find_element(By.ID, "token").get_attribute("value")
        if PHASE == "tour":
            out["report_verdict"] = wait_text(
                d, "report-verdict", lambda t: t.startswith(("Report signature", "No report")),
                "the custody report")
            rows = d.find_elements(By.CSS_SELECTOR, "#report table.keys tbody tr")
            out["key_rows"] = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows]
            shoot(d, "02-keys.png")
            d.find_element(By.CSS_SELECTOR, "button[data-view=log]").click()
            wait_text(d, "page-info", lambda t: t.startswith("page 1"), "the audit log")
            Select(d.find_element(By.NAME, "outcome")).select_by_visible_text("denied")
            d.find_element(By.CSS_SELECTOR, "#filter button[type=submit]").click()
            # Read in the page (rows are replaced as pages load): wait until only denied show.
            rows_js = ("return Array.from(document.querySelectorAll('#events tbody tr'), "
                       "r => [r.className, Array.from(r.cells, c => c.textContent)]);")
            WebDriverWait(d, WAIT).until(
                lambda d: (lambda rows: rows and all(c == "outcome-denied" for c, _ in rows))(
                    d.execute_script(rows_js)))
            out["denied_rows"] = [cells for _, cells in d.execute_script(rows_js)]
            shoot(d, "03-audit-log.png")
            out["verdict"] = verify(d, "04-verify-intact.png")
        else:
            out["verdict"] = verify(d, "05-verify-broken.png")
        out["fingerprint"] = text(d, "fingerprint")
        out["progress"] = text(d, "verify-progress")
        out["storage"] = storage(d)
        out["console"] = [e["message"] for e in d.get_log("browser")]
        d.find_element(By.ID, "logout").click()
        out["after_sign_out"] = text(d, "status")
        out["login_shown_after_sign_out"] = d.find_element(By.ID, "login").is_displayed()
    finally:
        d.quit()
    print(json.dumps(out))


main()
