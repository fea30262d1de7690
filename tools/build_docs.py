"""Build the documentation site from the notebooks, offline: nbdev's processing, Markdown, MkDocs.

`nbdev_docs` renders the site with Quarto, which cannot be installed everywhere (its installer
downloads from GitHub). This script needs only registry packages:

1. nbdev's own notebook processors (`nbdev.serve.proc_nbs`, what `nbdev_docs` runs before Quarto)
   apply the directives (`#| hide`, `#| export`, ...), render `show_doc` and link `backticked`
   names, into `_proc/`;
2. each processed notebook becomes a Markdown page (nbconvert), its plots saved as images, links
   between notebooks and to documented symbols rewritten to the pages of this site;
3. MkDocs with the Material theme builds a static site into `docs/` (`--strict`: a broken link or
   page fails the build). Pages are plain files (`use_directory_urls: false`), so they open from
   `file://` too; search needs the site served over http (`python -m http.server -d docs`).

    python tools/build_docs.py            # build into docs/
    python tools/build_docs.py --out DIR  # build elsewhere
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".docs_build"


def settings() -> dict[str, str]:
    "settings.ini as a dict."
    from configparser import ConfigParser
    cp = ConfigParser(delimiters=["="])
    cp.read(ROOT / "settings.ini", encoding="utf-8")
    return dict(cp["DEFAULT"])


def process_notebooks() -> Path:
    "Run nbdev's documentation processors over nbs/ into _proc/; return that folder."
    from nbdev.serve import proc_nbs
    os.chdir(ROOT)
    return Path(proc_nbs(n_workers=2, force=True))


def page_names(proc: Path) -> dict[str, str]:
    "Notebook file name -> page stem, in nbdev's order (index first), e.g. '00_env.ipynb' -> 'env'."
    from execnb.nbio import read_nb
    names = {}
    for nb_path in sorted(proc.glob("[!_]*.ipynb"), key=lambda p: (p.stem != "index", p.name)):
        front = read_nb(nb_path).cells[0].source
        m = re.search(r"^output-file:\s*(\S+)\.html", front, re.MULTILINE)
        names[nb_path.name] = m.group(1) if m else nb_path.stem
    return names


def _front_matter(source: str) -> dict:
    import yaml
    return yaml.safe_load(source.strip().strip("-")) or {}


_SYMBOL_HEADING = re.compile(r"^(#{2,4}) ([A-Za-z_][\w.]*)[ \t]*$", re.MULTILINE)

def _anchor_symbols(markdown: str) -> str:
    "Give `### Name.method` headings nbdev's anchors (`#name.method`); MkDocs would drop the dot."
    return _SYMBOL_HEADING.sub(lambda m: f"{m[1]} {m[2]} {{#{m[2].lower()}}}", markdown)


_DIRECTIVE = re.compile(r"^#\|\s*([\w-]+):?\s*(.*)$", re.MULTILINE)

def _apply_quarto_options(cell):
    "Do what Quarto does with the options nbdev leaves in code cells: `echo: false` hides the code."
    if cell.cell_type != "code": return cell
    options = dict(_DIRECTIVE.findall(cell.source))
    if options.get("echo", "").strip().lower() == "false":
        cell.metadata.setdefault("tags", []).append("remove_input")
    cell.source = _DIRECTIVE.sub("", cell.source).strip("\n")
    return cell


def _rewrite_links(markdown: str, names: dict[str, str], site_url: str) -> str:
    "Links to notebooks and to the hosted site become links to this site's pages."
    for nb, stem in names.items():
        markdown = re.sub(rf"\]\((?:\./)?{re.escape(nb)}(#[^)]*)?\)", lambda m: f"]({stem}.md{m.group(1) or ''})", markdown)
    markdown = re.sub(rf"{re.escape(site_url)}/?([\w.-]+)\.html", r"\1.md", markdown)
    if dangling := re.findall(r"\]\(([\w.-]+\.ipynb)", markdown):
        raise ValueError(f"links to notebooks that do not exist: {sorted(set(dangling))}")
    return markdown


def _source_line(nb_name: str, nb, cfg: dict[str, str]) -> str:
    "Links to the page's notebook and the module it exports, on the repository."
    blob = f"{cfg['git_url'].rstrip('/')}/blob/{cfg['branch']}"
    links = [f"[notebook `nbs/{nb_name}`]({blob}/nbs/{nb_name})"]
    m = re.search(r"^#\|\s*default_exp\s+(\S+)", "\n".join(c.source for c in nb.cells if c.cell_type == "code"), re.MULTILINE)
    if m and m.group(1) != "__init__":
        module = f"{cfg['lib_path']}/{m.group(1).replace('.', '/')}.py"
        links.append(f"[module `{module}`]({blob}/{module})")
    return "<small>Source: " + " · ".join(links) + "</small>\n\n"


def to_markdown(nb_path: Path, stem: str, out: Path, names: dict[str, str], site_url: str) -> str:
    "Write one processed notebook as `out/stem.md` (images into `out/stem_files/`); return its title."
    import nbformat
    from nbconvert import MarkdownExporter
    source = _source_line(nb_path.name, nbformat.read(ROOT / "nbs" / nb_path.name, as_version=4), settings())
    from nbconvert.preprocessors import TagRemovePreprocessor
    nb = nbformat.read(nb_path, as_version=4)
    meta = _front_matter(nb.cells.pop(0).source) if nb.cells and nb.cells[0].cell_type == "raw" else {}
    nb.cells = [_apply_quarto_options(c) for c in nb.cells
                if not (c.cell_type == "markdown" and c.source.startswith("<!-- WARNING"))]
    nb.metadata["language_info"] = {"name": "python"}  # fences code as ```python
    exporter = MarkdownExporter()
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags=("remove_input",)), enabled=True)
    body, resources = exporter.from_notebook_node(nb, resources={"output_files_dir": f"{stem}_files"})
    for name, data in resources.get("outputs", {}).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    title = meta.get("title", stem)
    head = f"# {title}\n\n" + (f"> {meta['description']}\n\n" if meta.get("description") else "") + source
    (out / f"{stem}.md").write_text(head + _rewrite_links(_anchor_symbols(body), names, site_url), encoding="utf-8")
    return title


MKDOCS = """\
site_name: {title}
site_description: {description}
site_url: {site_url}
docs_dir: md
use_directory_urls: false
strict: true
theme:
  name: material
  font: false  # system fonts: the site makes no request outside itself
  features: [navigation.sections, navigation.top, search.highlight, content.code.copy]
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

STYLES = """\
.md-typeset blockquote { color: var(--md-default-fg-color--light); }
.md-typeset table:not([class]) { font-size: .7rem; }
"""


def write_sources(proc: Path, out: Path) -> list[tuple[str, str]]:
    "Markdown pages and mkdocs.yml for every processed notebook; returns (title, page) in order."
    cfg = settings()
    site_url = cfg["doc_host"].rstrip("/") + cfg["doc_baseurl"].rstrip("/")
    if out.exists(): shutil.rmtree(out)
    md = out / "md"
    md.mkdir(parents=True)
    names = page_names(proc)
    pages = [(to_markdown(proc / nb, stem, md, names, site_url), f"{stem}.md") for nb, stem in names.items()]
    (md / "styles.css").write_text(STYLES, encoding="utf-8")
    nav = "\n".join(f"  - {title!r}: {page}" for title, page in pages)
    description = cfg["description"].replace(":", " -")
    (out / "mkdocs.yml").write_text(MKDOCS.format(title=cfg["title"], description=description, site_url=site_url + "/",
                                                  nav=nav), encoding="utf-8")
    return pages


def build(site: Path) -> list[tuple[str, str]]:
    "Process, convert and build the site into `site`; return the pages."
    pages = write_sources(process_notebooks(), BUILD)
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(BUILD / "mkdocs.yml"),
                    "-d", str(site.resolve())], check=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the site (default: docs/)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pages = build(args.out)
    print(f"built {len(pages)} pages into {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
