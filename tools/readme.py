"""Generate README.md from nbs/index.ipynb, the way nbdev_readme would without Quarto.

nbdev's own notebook processors (the ones `nbdev_docs` runs) apply the directives — hidden cells
and export cells disappear, show_doc is rendered — and this script writes the processed notebook
as GitHub Markdown: prose as is, code in ```python blocks, text outputs in ``` blocks.

    python tools/readme.py           # write README.md
    python tools/readme.py --check   # exit 1 if README.md is not what index.ipynb gives
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"


def process(nb_path: Path):
    "The notebook after nbdev's documentation processors (directives applied, show_doc rendered)."
    from execnb.nbio import read_nb
    from nbdev.processors import FilterDefaults
    os.environ["IN_TEST"] = "1"  # what nbdev sets while processing docs: no nbdev_export from the notebook
    nb = read_nb(nb_path)
    FilterDefaults()(nb)
    return nb


def _front_matter(source: str) -> str:
    "'# title' and '> description' from a processed notebook's YAML front matter."
    import yaml
    meta = yaml.safe_load(source.strip().strip("-")) or {}
    head = f"# {meta['title']}\n" if meta.get("title") else ""
    return head + (f"\n> {meta['description']}\n" if meta.get("description") else "")


def _outputs(cell) -> list[str]:
    "Text outputs of a code cell as fenced blocks."
    blocks = []
    for out in cell.get("outputs", []):
        text = out.get("text") if out.get("output_type") == "stream" else out.get("data", {}).get("text/plain")
        if text: blocks.append("```\n" + ("".join(text) if isinstance(text, list) else text).rstrip("\n") + "\n```")
    return blocks


def _link_notebooks(markdown: str) -> str:
    "Links to sibling notebooks point into nbs/ from the repository root."
    return re.sub(r"\]\((\d\d\w*\.ipynb)", r"](nbs/\1", markdown)


def to_markdown(nb) -> str:
    "GitHub Markdown of a processed notebook."
    parts = []
    for cell in nb.cells:
        source = cell.source.strip()
        if cell.cell_type == "raw" and source.startswith("---"): parts.append(_front_matter(source))
        elif cell.cell_type == "markdown" and source and not source.startswith("<!-- WARNING"):
            parts.append(_link_notebooks(source))
        elif cell.cell_type == "code" and source:
            parts += ["```python\n" + source + "\n```", *_outputs(cell)]
    return NOTICE + "\n\n".join(p.strip("\n") for p in parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale instead of writing it")
    args = parser.parse_args(argv)
    os.chdir(ROOT / "nbs")
    text = to_markdown(process(ROOT / "nbs" / "index.ipynb"))
    readme = ROOT / "README.md"
    if args.check:
        if readme.exists() and readme.read_text(encoding="utf-8") == text:
            print("README.md is up to date with nbs/index.ipynb")
            return 0
        print("README.md is stale: run `python tools/readme.py` and commit it", file=sys.stderr)
        return 1
    readme.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {readme.relative_to(ROOT)} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
