"""Drives the weft console in headless Chromium (Selenium + chromedriver) for
crates/weft/tests/console.rs: log in with a token, read the mesh graph's edges, the
proxies page, the services page, then press a rollback button on the history page.
Every check asserts what the page shows; screenshots go to $CONSOLE_SCREENSHOTS."""

import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ["CONSOLE_URL"]
TOKEN = os.environ["CONSOLE_TOKEN"]
NODES = os.environ["CONSOLE_NODES"].split(",")
SOURCES = os.environ["CONSOLE_SOURCES"].split(",")
DESTINATION = os.environ["CONSOLE_DESTINATION"]
ENDPOINT = os.environ["CONSOLE_ENDPOINT"]
ROLLBACK_TO = os.environ["CONSOLE_ROLLBACK_TO"]
SHOTS = os.environ["CONSOLE_SCREENSHOTS"]


def browser():
    opts = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1400", "--ignore-certificate-errors"]:
        opts.add_argument(arg)
    opts.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def check(cond, what, d):
    if not cond:
        shot(d, "failed")
        sys.exit(f"FAILED: {what}\n--- page {d.current_url} ---\n{d.find_element(By.TAG_NAME, 'body').text}")


def edges(d):
    """(source, destination) → (rate, errors, p99) from the mesh page's table."""
    out = {}
    for row in d.find_elements(By.CSS_SELECTOR, "#edges tr.edge"):
        cell = lambda c: row.find_element(By.CLASS_NAME, c).text
        out[(cell("source"), cell("destination"))] = (float(cell("rate")), cell("errors"), cell("p99"))
    return out


def main():
    os.makedirs(SHOTS, exist_ok=True)
    d = browser()
    try:
        # Not logged in: the console asks for a token.
        d.get(URL)
        check(d.find_elements(By.ID, "token"), "the login form is shown without a cookie", d)
        shot(d, "1-login")
        d.find_element(By.ID, "token").send_keys(TOKEN)
        d.find_element(By.ID, "login").click()
        WebDriverWait(d, 10).until(lambda d: d.get_cookie("weft_console") is not None)
        cookie = d.get_cookie("weft_console")
        check(cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", f"an HttpOnly SameSite=Strict cookie: {cookie}", d)

        # The mesh graph: both callers' edges to the backend's service, with traffic.
        deadline = time.time() + 20
        while True:
            d.get(URL)
            found = edges(d)
            if all(found.get((s, DESTINATION), (0,))[0] > 0 for s in SOURCES) or time.time() > deadline:
                break
            time.sleep(0.5)
        for s in SOURCES:
            rate, errors, p99 = found.get((s, DESTINATION), (0, "", ""))
            check(rate > 0, f"edge {s} -> {DESTINATION} has a rate above 0 (edges: {found})", d)
            check(errors.endswith("%") and p99.endswith("ms"), f"edge {s}: error share and p99 shown ({errors}, {p99})", d)
        svg = d.find_element(By.ID, "mesh")
        check(len(svg.find_elements(By.CSS_SELECTOR, "g.service")) >= 3, "the graph draws the three services", d)
        check("req/s" in svg.get_attribute("innerHTML"), "the graph's edges are labelled", d)
        shot(d, "2-mesh")

        # The proxies page: both nodes, at the latest revision.
        d.get(URL + "/proxies")
        latest = d.find_element(By.ID, "latest").text
        rows = {r.find_element(By.CLASS_NAME, "node").text: r for r in d.find_elements(By.CSS_SELECTOR, "tr.proxy")}
        for n in NODES:
            check(n in rows, f"proxy {n} listed ({list(rows)})", d)
            acked = rows[n].find_element(By.CLASS_NAME, "acked").text
            check(acked == latest, f"proxy {n} acknowledged revision {acked}, latest {latest}", d)
        shot(d, "3-proxies")

        # The services page: the registered endpoint.
        d.get(URL + "/services")
        body = d.find_element(By.TAG_NAME, "body").text
        check(DESTINATION in body and ENDPOINT in body and "version=v1" in body, "the endpoint and its labels are listed", d)
        shot(d, "4-services")

        # History: roll back with the button, land on the new revision's diff.
        d.get(URL + "/history")
        before = int(d.find_element(By.ID, "latest").text)
        shot(d, "5-history")
        d.find_element(By.ID, "rollback-" + ROLLBACK_TO).click()
        # (The click navigates: wait for the page the redirect leads to.)
        WebDriverWait(d, 10).until(lambda d: "/ui/history?rev=" in d.current_url)
        after = int(d.find_element(By.ID, "latest").text)
        check(after == before + 1, f"a new revision after the rollback ({before} -> {after})", d)
        check(d.current_url.endswith(f"/ui/history?rev={after}"), f"redirected to the new revision ({d.current_url})", d)
        diff = d.find_element(By.ID, "diff").text
        check(f"rollback to {ROLLBACK_TO}" in diff, f"the diff names the rollback ({diff})", d)
        removed = [e.text for e in d.find_elements(By.CSS_SELECTOR, "pre.change span.del")]
        check(any("v2" in t for t in removed), f"the diff shows v2 removed ({removed})", d)
        shot(d, "6-rolled-back")
        print(f"rolled back to {ROLLBACK_TO}: revision {after}")
    finally:
        d.quit()


main()
