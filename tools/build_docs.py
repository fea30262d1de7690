"""Build the documentation site from the notebooks, offline: nbdev's processing, Markdown, MkDocs.

`nbdev_docs` renders the site with Quarto, which cannot be installed everywhere (its installer
downloads from GitHub). This script needs only registry packages (nbdev, nbconvert, mkdocs-material):

1. nbdev's own notebook processors (`FilterDefaults`, what `nbdev_proc_nbs`/`nbdev_docs` run before
   Quarto) apply the directives (`#| hide`, `#| export`, ...), add and render `show_doc` and link
   `backticked` names, one notebook per worker process, into a private temporary folder;
2. each processed notebook becomes a Markdown page (nbconvert), its plots saved as images, the
   Quarto options nbdev leaves for Quarto applied (`echo: false`, `output: false`, `include: false`),
   links between notebooks and to documented symbols rewritten to the pages of this site;
3. MkDocs with the Material theme builds a static site (`--strict`: a broken link or page fails the
   build). Pages are plain files (`use_directory_urls: false`), so they open from `file://` too;
   search runs in a web worker, which browsers start only over http: `python -m http.server -d docs`.
   (Material's `offline` plugin would make search work from `file://`, but it loads a shim from
   unpkg.com, and this site requests nothing outside itself.)

    python tools/build_docs.py                # build the site into docs/ (open docs/index.html)
    python tools/build_docs.py --out DIR      # build it elsewhere
    python tools/build_docs.py --readme       # also write README.md from nbs/index.ipynb
    python tools/build_docs.py --sync         # no build: write README.md (with the performance table)
                                              #   and the Quarto config, e.g. after adding a notebook
    python tools/build_docs.py --check        # no build: fail if README.md, the index's performance
                                              #   table or the Quarto config is stale

It also keeps `nbs/nbdev.yml` and `nbs/sidebar.yml` (the Quarto configuration `nbdev_docs` uses)
in step with settings.ini and the notebooks, using nbdev's own generators.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
sys.path.insert(0, str(ROOT / "tools"))
from docs_worker import process_one  # noqa: E402  (a module, so spawned workers can import it)


def settings() -> dict[str, str]:
    "settings.ini as a dict."
    from configparser import ConfigParser
    cp = ConfigParser(delimiters=["="])
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    return dict(cp["DEFAULT"])


# ---------------------------------------------------------------------------------------------
# 1. nbdev's processing
# ---------------------------------------------------------------------------------------------

def notebooks() -> list[Path]:
    "The notebooks of the site in nbdev's order (what `nbdev_sidebar` lists: index first, then by name)."
    from nbdev.doclinks import nbglob
    from nbdev.quarto import _sort
    found = nbglob(NBS, func=lambda a, b: (Path(a), b), file_re=r"\.ipynb$", skip_folder_re=r"(?:^[_.]|^www$)")
    return [d / name for d, name in found.sorted(key=_sort)]


def process_notebooks(nbs: list[Path], dest: Path, workers: int = 2) -> Path:
    "Processed copies of `nbs` in `dest`; a failing notebook stops the build and names its cell."
    dest.mkdir(parents=True, exist_ok=True)
    jobs = [(nb, dest / nb.name) for nb in nbs]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker, as nbdev does
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=ctx) as pool:
        futures = {nb.name: pool.submit(process_one, job) for nb, job in zip(nbs, jobs)}
        failed = []
        for name, future in futures.items():
            try: future.result()
            except Exception as e: failed.append(f"{name}: {e}")
    if failed: raise SystemExit("nbdev could not process these notebooks for the docs:\n  " + "\n  ".join(failed))
    return dest


# ---------------------------------------------------------------------------------------------
# 2. Markdown pages
# ---------------------------------------------------------------------------------------------

def _front_matter(source: str) -> dict:
    import yaml
    return yaml.safe_load(source.strip().strip("-")) or {}


def page_names(proc: Path, nbs: list[Path]) -> dict[str, str]:
    "Notebook file name -> page stem (nbdev's `output-file`), e.g. '00_env.ipynb' -> 'env'; in `nbs` order."
    from execnb.nbio import read_nb
    names = {}
    for nb in nbs:
        cells = read_nb(proc / nb.name).cells
        front = cells[0].source if cells and cells[0].cell_type == "raw" else ""
        m = re.search(r"^output-file:\s*(\S+)\.html", front, re.MULTILINE)
        names[nb.name] = m.group(1) if m else nb.stem
    return names


_SYMBOL_HEADING = re.compile(r"^(#{2,4}) ([A-Za-z_][\w.]*)[ \t]*$", re.MULTILINE)

def _anchor_symbols(markdown: str) -> str:
    "Give `### Name.method` headings nbdev's anchors (`#name.method`); MkDocs would drop the dot."
    def heading(m: re.Match) -> str:
        name = m[2].replace("_", r"\_")  # escaped, or `__iter__` would turn bold and break the id
        return f"{m[1]} {name} {{#{name.lower()}}}"
    return _SYMBOL_HEADING.sub(heading, markdown)


_DIRECTIVE = re.compile(r"^#\|\s*([\w-]+):?\s*(.*)$", re.MULTILINE)

def _apply_quarto_options(cell):
    "Do what Quarto does with the cell options nbdev leaves to it; None when the cell is not shown."
    if cell.cell_type != "code": return cell
    options = {k: v.strip().lower() for k, v in _DIRECTIVE.findall(cell.source)}
    if options.get("include") == "false": return None
    if options.get("echo") == "false": cell.metadata.setdefault("tags", []).append("remove_input")
    if options.get("output") == "false": cell.outputs = []
    cell.source = _DIRECTIVE.sub("", cell.source).strip("\n")
    if not cell.source and not cell.get("outputs"): return None
    return cell


def _rewrite_links(markdown: str, names: dict[str, str], site_url: str) -> str:
    "Links to notebooks and to the hosted site become links to this site's pages."
    for nb, stem in names.items():
        markdown = re.sub(rf"\]\((?:\./)?{re.escape(nb)}(#[^)]*)?\)", lambda m: f"]({stem}.md{m.group(1) or ''})", markdown)
    markdown = re.sub(rf"{re.escape(site_url)}/?([\w.-]+)\.html", r"\1.md", markdown)
    markdown = re.sub(r"(/blob/[^)\s]+\.py)#LNone\)", r"\1)", markdown)  # nbdev: no line number known
    if dangling := re.findall(r"\]\(([\w.-]+\.ipynb)", markdown):
        raise ValueError(f"links to notebooks that do not exist: {sorted(set(dangling))}")
    return markdown


def _source_line(nb_name: str, source_cells: str, cfg: dict[str, str]) -> str:
    "Links to the page's notebook and the module it exports, on the repository."
    blob = f"{cfg['git_url'].rstrip('/')}/blob/{cfg['branch']}"
    links = [f"[notebook `nbs/{nb_name}`]({blob}/nbs/{nb_name})"]
    m = re.search(r"^#\|\s*default_exp\s+(\S+)", source_cells, re.MULTILINE)
    if m and m.group(1) != "__init__":
        module = f"{cfg['lib_path']}/{m.group(1).replace('.', '/')}.py"
        links.append(f"[module `{module}`]({blob}/{module})")
    return '<p class="source-links">Source: ' + " · ".join(_md_link_to_html(l) for l in links) + "</p>\n\n"


def _md_link_to_html(link: str) -> str:
    text, url = re.fullmatch(r"\[(.*)\]\((.*)\)", link).groups()
    label = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    return f'<a href="{url}">{label}</a>'


def to_markdown(nb_path: Path, stem: str, out: Path, names: dict[str, str], cfg: dict[str, str]) -> str:
    "Write one processed notebook as `out/stem.md` (images into `out/stem_files/`); return its title."
    import nbformat
    from nbconvert import MarkdownExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    site_url = cfg["doc_host"].rstrip("/") + cfg["doc_baseurl"].rstrip("/")
    original = nbformat.read(NBS / nb_path.name, as_version=4)
    source = _source_line(nb_path.name, "\n".join(c.source for c in original.cells if c.cell_type == "code"), cfg)
    nb = nbformat.read(nb_path, as_version=4)
    meta = _front_matter(nb.cells.pop(0).source) if nb.cells and nb.cells[0].cell_type == "raw" else {}
    cells = [c for c in nb.cells if not (c.cell_type == "markdown" and c.source.startswith("<!-- WARNING"))]
    nb.cells = [c for c in map(_apply_quarto_options, cells) if c is not None]
    nb.metadata["language_info"] = {"name": "python"}  # fences code as ```python
    exporter = MarkdownExporter()
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=("remove_input",)), enabled=True)
    body, resources = exporter.from_notebook_node(nb, resources={"output_files_dir": f"{stem}_files"})
    for name, data in resources.get("outputs", {}).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    title = str(meta.get("title", stem))
    head = f"# {title}\n\n" + (f"> {meta['description']}\n\n" if meta.get("description") else "") + source
    (out / f"{stem}.md").write_text(head + _rewrite_links(_anchor_symbols(body), names, site_url), encoding="utf-8")
    return title


MKDOCS = """\
site_name: {title}
site_description: {description}
site_url: {site_url}
copyright: {copyright}
docs_dir: md
use_directory_urls: false
strict: true
theme:
  name: material
  font: false  # system fonts: the site requests nothing outside itself
  features: [navigation.top, navigation.footer, search.highlight, content.code.copy, toc.follow, toc.integrate]
  palette:
    - scheme: default
      primary: indigo
extra_css: [styles.css]
plugins:
  - search
markdown_extensions:
  - tables
  - admonition
  - attr_list
  - md_in_html
  - toc:
      permalink: true
  - pymdownx.highlight
  - pymdownx.superfences
nav:
{nav}
"""

# The book's code lines are at most 110 characters. They fit the content column without scrolling
# from a 1400 px wide window: the page's table of contents sits in the left navigation
# (`toc.integrate`), and the grid may grow to 72rem (1440 px at Material's 20 px rem).
STYLES = """\
.md-grid { max-width: 72rem; }
.md-typeset blockquote { color: var(--md-default-fg-color--light); }
.md-typeset table:not([class]) { font-size: .7rem; }
.md-typeset .source-links { font-size: .7rem; }
.md-typeset img { max-width: 100%; }
"""


def write_sources(proc: Path, nbs: list[Path], out: Path) -> list[tuple[str, str]]:
    "Markdown pages and mkdocs.yml for every processed notebook; returns (title, page) in order."
    cfg = settings()
    md = out / "md"
    md.mkdir(parents=True)
    names = page_names(proc, nbs)
    pages = [(to_markdown(proc / nb, stem, md, names, cfg), f"{stem}.md") for nb, stem in names.items()]
    (md / "styles.css").write_text(STYLES, encoding="utf-8")
    nav = "\n".join(f"  - {title!r}: {page}" for title, page in pages)
    q = lambda s: "'" + s.replace("'", "''") + "'"
    (out / "mkdocs.yml").write_text(MKDOCS.format(
        title=q(cfg["title"]), description=q(cfg["description"]), copyright=q("Copyright " + cfg.get("copyright", "")),
        site_url=q(cfg["doc_host"].rstrip("/") + cfg["doc_baseurl"].rstrip("/") + "/"), nav=nav), encoding="utf-8")
    return pages


# ---------------------------------------------------------------------------------------------
# 3. The site, and the Quarto configuration nbdev_docs uses
# ---------------------------------------------------------------------------------------------

def quarto_config() -> dict[Path, str]:
    "What nbdev's own generators write into nbs/nbdev.yml and nbs/sidebar.yml for these notebooks."
    import nbdev.quarto as quarto
    from nbdev.config import get_config
    cfg = get_config()
    vals = {k: cfg[k] for k in ["title", "description", "branch", "git_url", "doc_host", "doc_baseurl"]}
    vals["doc_path"] = cfg.doc_path.name
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): quarto.nbdev_sidebar(path=str(NBS), printit=True, force=True)
    return {NBS / "nbdev.yml": quarto._nbdev_yml.format(**vals), NBS / "sidebar.yml": buf.getvalue().rstrip("\n") + "\n"}


def stale_quarto_config() -> list[Path]:
    return [p for p, text in quarto_config().items() if not p.exists() or p.read_text(encoding="utf-8") != text]


def sync_quarto_config() -> None:
    "Rewrite nbs/nbdev.yml and nbs/sidebar.yml when they no longer match settings.ini and the notebooks."
    for path, text in quarto_config().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"updated {path.relative_to(ROOT)}")


def build(site: Path, workers: int = 2, keep: Path | None = None) -> list[tuple[str, str]]:
    "Process, convert and build the site into `site`; return the pages as (title, file)."
    os.chdir(ROOT)
    nbs = notebooks()
    if not nbs: raise SystemExit(f"no notebooks in {NBS}")
    with tempfile.TemporaryDirectory(prefix="tiny_gpt_docs_") as tmp:
        work = keep or Path(tmp)
        if keep and keep.exists(): shutil.rmtree(keep)
        proc = process_notebooks(nbs, work / "_proc", workers)
        pages = write_sources(proc, nbs, work / "mkdocs")
        site = site.resolve()
        if site.exists():  # keep what is committed in docs/ (README.md, .gitignore); replace the rest
            for p in site.iterdir():
                if p.name in {".gitignore", "README.md"}: continue
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--dirty",
                        "-f", str(work / "mkdocs" / "mkdocs.yml"), "-d", str(site)],
                       check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"})
    return [(title, page.replace(".md", ".html")) for title, page in pages]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / settings().get("doc_path", "docs"),
                        help="folder for the site (default: doc_path of settings.ini, docs/)")
    parser.add_argument("--readme", action="store_true", help="also write README.md from nbs/index.ipynb")
    parser.add_argument("--check", action="store_true",
                        help="build nothing; exit 1 if README.md, nbs/nbdev.yml or nbs/sidebar.yml is stale")
    parser.add_argument("--sync", action="store_true",
                        help="build nothing; write README.md, the performance table, nbs/nbdev.yml and nbs/sidebar.yml")
    parser.add_argument("--workers", type=int, default=2, help="notebooks processed in parallel (default 2)")
    parser.add_argument("--keep", type=Path, help="keep the processed notebooks and Markdown in this folder")
    args = parser.parse_args(argv)
    import readme
    if args.check:
        stale = [str(p.relative_to(ROOT)) for p in stale_quarto_config()]
        ok = readme.main(["--check"]) == 0
        if stale: print(f"stale: {', '.join(stale)}: run `python tools/build_docs.py` and commit", file=sys.stderr)
        return 0 if ok and not stale else 1
    if args.sync:
        sync_quarto_config()
        return readme.main([])
    start = time.perf_counter()
    sync_quarto_config()
    if args.readme: readme.main([])
    pages = build(args.out, args.workers, args.keep)
    print(f"built {len(pages)} pages into {args.out} in {time.perf_counter() - start:.1f} s: open {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
