"""The documentation site, built offline and checked in a real headless Chromium.

Builds the site with tools/build_docs.py into a temporary folder, serves it on 127.0.0.1 and opens
every page: no console error, the right title, a section for every documented symbol of the stage,
every image loaded, every internal link resolving, search finding `tiny_data_loader`, a
110-character code line fitting the content column at 1400 px, and no absolute path of the machine
that built it and no word pointing outside the book (the rules of tests/test_book.py) on any page.
Screenshots of two pages are saved into artifacts/.
"""
import functools
import html.parser
import http.server
import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"): raise RuntimeError("CI must install Debian's chromium and chromium-driver (see .ci/run)")
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def documented_symbols() -> dict[str, set[str]]:
    "Page -> anchors every public function and class of that page's module must have."
    import inspect
    pages: dict[str, set[str]] = {}
    for module_name, syms in importlib.import_module("tiny_gpt._modidx").d["syms"].items():
        if not syms: continue
        page = next(iter(syms.values()))[0].split("#")[0]
        module = importlib.import_module(module_name)
        public = {n for n in getattr(module, "__all__", [])
                  if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))}
        pages.setdefault(page, set()).update(n.lower() for n in public)
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address): pass  # the browser closing a connection early is not a failure


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The built site served on 127.0.0.1; yields (folder, base URL)."
    out = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), "--out", str(out)], check=True, cwd=ROOT)
    handler = functools.partial(_QuietHandler, directory=str(out))
    httpd = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    "Headless Chromium with no background networking, driven by the Debian chromedriver."
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def pages_of(site_dir: Path) -> dict[str, str]:
    "Page file -> title, from the navigation MkDocs wrote."
    index = (site_dir / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="([\w.-]+\.html)" class="md-nav__link[^"]*">\s*<span class="md-ellipsis">\s*([^<]+?)\s*</span>', index)
    return {"index.html": "tiny_gpt", **{href: title for href, title in links if href != "index.html"}}


class _Links(html.parser.HTMLParser):
    "Collects href, src and id attributes of a page."
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"): self.hrefs.append(a["href"])
        if a.get("id"): self.ids.add(a["id"])


def test_every_stage_has_a_page(site):
    pages = pages_of(site[0])
    for stem in ("index", "env", "checks", "io", "tokenizers", "dataloader", "embeddings", "attention", "model", "train",
                 "cli"):
        assert f"{stem}.html" in pages, f"no page for {stem}: {sorted(pages)}"
    assert list(pages)[:4] == ["index.html", "env.html", "checks.html", "io.html"]  # stage order in the navigation


def test_pages_load_cleanly_in_chromium(site, browser):
    site_dir, base = site
    symbols = documented_symbols()
    for page, title in pages_of(site_dir).items():
        browser.get(base + page)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        assert title in browser.title, (page, browser.title)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, (page, errors)
        outside = browser.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name).filter(u => !u.startsWith(arguments[0]))", base)
        assert not outside, f"{page} requests files from outside the site: {outside}"
        leaked = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h1, h2, h3, h4, .md-nav__link") if "{#" in h.text]
        assert not leaked, f"{page}: heading attributes rendered as text: {leaked}"
        ids = set(browser.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        missing = symbols.get(page, set()) - ids
        assert not missing, f"{page} has no section for {sorted(missing)}"
        broken = browser.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
        assert not broken, (page, broken)


def test_internal_links_resolve(site):
    site_dir, base = site
    @functools.cache
    def links_of(page: str) -> _Links:  # each page parsed once: pages with figures are megabytes
        parser = _Links(); parser.feed((site_dir / page).read_text(encoding="utf-8"))
        return parser
    fetched, checked = set(), 0
    for page in pages_of(site_dir):
        for href in links_of(page).hrefs:
            url = urllib.parse.urljoin(base + page, href)
            if not url.startswith(base): continue
            target, _, fragment = url.partition("#")
            if target not in fetched:  # each target served once
                with urllib.request.urlopen(target) as response: assert response.status == 200, url
                fetched.add(target)
            if fragment and target.endswith(".html"):
                ids = links_of(target[len(base):]).ids
                assert urllib.parse.unquote(fragment) in ids, f"{page}: {href} has no target"
            checked += 1
    assert checked > 50


def test_search_finds_tiny_data_loader(site, browser):
    _, base = site
    browser.get(base + "index.html")
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    WebDriverWait(browser, 30).until(lambda d: box.is_displayed())
    box.click()
    box.send_keys("tiny_data_loader")
    results = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item") or None)
    assert any("tiny_data_loader" in r.text for r in results)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "docs-search.png"))


def test_screenshots(site, browser):
    _, base = site
    ARTIFACTS.mkdir(exist_ok=True)
    for page in ("index.html", "tokenizers.html"):
        browser.get(base + page)
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        path = ARTIFACTS / f"docs-{page.replace('.html', '')}.png"
        browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000


def test_a_110_character_code_line_fits_at_1400_px(site, browser):
    "The book's longest code line does not scroll sideways in a 1400 px wide window."
    _, base = site
    browser.set_window_size(1400, 900)
    try:
        browser.get(base + "tokenizers.html")
        WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
        scroll, client = browser.execute_script(
            "const pre = document.createElement('pre'), code = document.createElement('code');"
            "code.textContent = 'x'.repeat(110); pre.appendChild(code);"
            "document.querySelector('.md-content .md-typeset').appendChild(pre);"
            "return [code.scrollWidth, code.clientWidth];")
        assert scroll <= client, f"a 110-character line needs {scroll} px, the code column is {client} px"
    finally:
        browser.set_window_size(1280, 900)


def test_no_machine_paths_or_outside_words_on_the_site(site):
    from test_book import OUTSIDE_WORDS, machine_paths  # tests/ is on sys.path under pytest
    site_dir, _ = site
    offenders = []
    for path in sorted([*site_dir.glob("*.html"), site_dir / "search" / "search_index.json"]):
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: …{p}…" for p in machine_paths(text)]
        offenders += [f"{path.name}: {m[0]!r}" for m in OUTSIDE_WORDS.finditer(text)]
    if offenders: pytest.fail(f"{len(offenders)} offender(s) on the site:\n  " + "\n  ".join(offenders), pytrace=False)


def test_every_stored_figure_is_an_image_on_its_page(site):
    "Each PNG a notebook stores (the GELU curve, the learning-rate schedule...) is an <img> on its page."
    import json
    site_dir, _ = site
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        figures = sum("image/png" in o.get("data", {}) for c in cells for o in c.get("outputs", []))
        if not figures: continue
        page = site_dir / (re.sub(r"^\d+[a-z]?_", "", nb.stem) + ".html")
        images = re.findall(r"<img\b[^>]*>", page.read_text(encoding="utf-8"))
        assert len(images) >= figures, f"{page.name}: {figures} figures in {nb.name}, {len(images)} <img> on the page"
