"""Generate README.md from nbs/index.ipynb, the way nbdev_readme would without Quarto.

nbdev's own notebook processors (the ones `nbdev_docs` runs) apply the directives — hidden cells
and export cells disappear, show_doc is rendered — and this script writes the processed notebook
as GitHub Markdown: prose as is, code in ```python blocks, text outputs in ``` blocks.

Before that it renders the performance table from benchmarks/results.json (the one file the
benchmarks write, see benchmarks/results.py) into the index notebook's markdown cell that starts
with `PERF_MARK`, so the notebook, the docs site and README.md show the recorded figures and no
figure is typed by hand.

    python tools/readme.py           # fill the table into nbs/index.ipynb, write README.md
    python tools/readme.py --check   # exit 1 if the table or README.md is not what they would be
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "<!-- Generated from nbs/index.ipynb by tools/readme.py: edit the notebook, not this file. -->\n\n"
INDEX = ROOT / "nbs" / "index.ipynb"
RESULTS = ROOT / "benchmarks" / "results.json"
PERF_MARK = "<!-- performance table: rendered from benchmarks/results.json by tools/readme.py; do not edit -->"
BENCH_ORDER = ("dataset", "prepare", "bpe", "model", "train")  # the stages' order; others follow by name


# ---------------------------------------------------------------------------------------------
# The performance table, from benchmarks/results.json
# ---------------------------------------------------------------------------------------------

def _stem(bench: str) -> str:
    return bench.removeprefix("bench_").removesuffix(".py")


def _order(stem: str) -> tuple[int, str]:
    return (BENCH_ORDER.index(stem) if stem in BENCH_ORDER else len(BENCH_ORDER), stem)


def _cell(value) -> str:
    "A table cell: text with its pipes escaped and no line breaks."
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def _ratio(ratio) -> str:
    if ratio is None or ratio == "": return ""
    if isinstance(ratio, str): return _cell(ratio)
    return f"{ratio:,.0f}×" if ratio >= 10 else f"{ratio:.2g}×"


def _machine(m: dict) -> str:
    "'2 CPUs (AMD EPYC, AVX2), Linux-6.1-x86_64, Python 3.11.7, torch 2.13.0+cpu, ...' from a `machine`."
    cpu = ", ".join(v for v in (m.get("processor"), m.get("torch_cpu_capability")) if v)  # "AMD EPYC, AVX2"
    cpus = (f"{m['cpus']} CPUs" + (f" ({cpu})" if cpu else "")) if m.get("cpus") else ""
    parts = [m.get("gpu", ""), cpus, m.get("platform", ""),
             f"Python {m['python']}" if m.get("python") else ""]
    parts += [f"{name} {version}" for name, version in (m.get("versions") or {}).items()]
    if m.get("load_1min") is not None: parts.append(f"load {m['load_1min']}")
    return ", ".join(p for p in parts if p)


def performance_table(results: dict, scripts: list[str]) -> str:
    "Markdown for every recorded benchmark section, then the benchmarks that recorded nothing yet."
    out = []
    for bench in sorted(results, key=lambda b: _order(_stem(b))):
        section = results[bench]
        measured = any(r.get("ours") != "not measured" for r in section.get("rows", []))
        head = (f"**{_cell(_stem(bench))}** — measured {section.get('date', '?')} on {_machine(section.get('machine', {}))}"
                if measured else f"**{_cell(_stem(bench))}** — not measured (targets set {section.get('date', '?')})")
        if section.get("command"): head += f"; `{section['command']}`"
        out.append(head + (f". {_cell(section['notes'])}" if section.get("notes") else ""))
        rows = ["| what | tiny_gpt | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        for r in section.get("rows", []):
            met = {True: "yes", False: "**no**"}.get(r.get("passed"), "")
            rows.append(f"| {_cell(r['what'])} | {_cell(r['ours'])} | {_cell(r.get('baseline', ''))} | "
                        f"{_ratio(r.get('ratio'))} | {_cell(r.get('target', ''))} | {met} |")
        out.append("\n".join(rows))
    recorded = {_stem(b) for b in results}
    missing = sorted((s for s in scripts if _stem(s) not in recorded), key=lambda s: _order(_stem(s)))
    if missing:
        listed = ", ".join(f"`python benchmarks/{s}.py`" for s in missing)
        out.append(("No results recorded yet" if not results else "Not recorded yet") + f": {listed}.")
    return "\n\n".join(out)


def rendered_performance_cell() -> str:
    "The performance cell's markdown as results.json and the benchmark scripts give it."
    results = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    scripts = [p.stem for p in sorted((ROOT / "benchmarks").glob("bench_*.py"))]
    return PERF_MARK + "\n\n" + performance_table(results, scripts)


def fill_performance(check: bool = False) -> bool:
    "Write the rendered table into nbs/index.ipynb (unless `check`); True when it was up to date."
    from execnb.nbio import read_nb, write_nb
    nb = read_nb(INDEX)
    cells = [c for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(PERF_MARK.split(":")[0])]
    if len(cells) != 1: raise SystemExit(f"nbs/index.ipynb needs exactly one markdown cell starting with {PERF_MARK.split(':')[0]!r}")
    text = rendered_performance_cell()
    if cells[0].source == text: return True
    if not check:
        cells[0].source = text
        write_nb(nb, INDEX)
        print("updated the performance table in nbs/index.ipynb from benchmarks/results.json")
    return False


# ---------------------------------------------------------------------------------------------
# README.md
# ---------------------------------------------------------------------------------------------


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
    table_ok = fill_performance(check=args.check)
    os.chdir(ROOT / "nbs")
    text = to_markdown(process(INDEX))
    readme = ROOT / "README.md"
    if args.check:
        if not table_ok:
            print("the performance table of nbs/index.ipynb is not what benchmarks/results.json gives: "
                  "run `python tools/readme.py` and commit nbs/index.ipynb and README.md", file=sys.stderr)
        if readme.exists() and readme.read_text(encoding="utf-8") == text:
            print("README.md is up to date with nbs/index.ipynb")
            return 0 if table_ok else 1
        print("README.md is stale: run `python tools/readme.py` and commit it", file=sys.stderr)
        return 1
    readme.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {readme.relative_to(ROOT)} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
