"""The book's house rules, checked on every notebook in nbs/ and on README.md.

Each test collects every offender in every notebook before it fails, so one run lists all that is
left to fix: notebook, cell number (0-based, as Jupyter's cell list and nbformat count), cell id,
and the offending line or phrase.

- No code cell longer than 30 lines (blank lines and `#|` directives not counted), except plumbing
  hidden from the docs (a cell starting with `#| hide` or `#| exporti`, e.g. a data table).
- No line of a code cell longer than 110 characters.
- The book stands alone: no words that point outside it ("seed notebook", "the issue's", ...), in
  sources and stored outputs.
- No absolute path of the machine that ran a notebook, in sources, stored outputs and README.md
  (the built site is checked by tests/test_docs_site.py with `machine_paths`).
- The import cells (every code cell above the chapter's title) are hidden from the docs, in every
  notebook; the first cell is `#| default_exp`, the last the hidden `nbdev_export()`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb"))
MAX_CELL_LINES, MAX_LINE = 30, 110

# Words that refer to things a reader of the book does not have. Random seeds are fine: "seed=0",
# "torch.manual_seed", "the seeded order" do not match.
OUTSIDE_WORDS = re.compile(r"seed notebook|the seed's|as in the seed\b|\bin the seed\b|from the lead|"
                           r"the issue's|this machine", re.IGNORECASE)


def _machine_path_patterns() -> list[re.Pattern]:
    "Absolute paths that only exist on the machine that ran a notebook."
    fixed = [r"/root/", r"/work/", r"/home/", r"/Users/\w", r"[A-Za-z]:\\Users\\"]
    local = {str(ROOT.parent), str(Path.home())} - {"/", ""}
    return [re.compile(p) for p in fixed] + [re.compile(re.escape(p) + r"(?:/|\b)") for p in sorted(local)]


MACHINE_PATHS = _machine_path_patterns()


def machine_paths(text: str) -> list[str]:
    "Every absolute machine path in `text`, with a little context."
    starts = sorted({m.start() for pattern in MACHINE_PATHS for m in pattern.finditer(text)})
    return [text[max(0, s - 20):s + 40].replace("\n", "⏎") for s in starts]


def cells(nb_path: Path) -> list[dict]:
    return json.loads(nb_path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def output_text(cell: dict) -> str:
    "Everything a stored output shows as text: streams, text/plain, text/markdown, text/html, errors."
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out: parts.append(out["text"])
        for mime in ("text/plain", "text/markdown", "text/html"):
            if mime in out.get("data", {}): parts.append(out["data"][mime])
        if out.get("output_type") == "error": parts += out.get("traceback", [])
    return "".join("".join(p) if isinstance(p, list) else p for p in parts)


def where(nb: Path, i: int, cell: dict) -> str:
    return f"{nb.relative_to(ROOT)} cell {i} (id {cell.get('id', '?')})"


def directives(src: str) -> list[str]:
    return [l.strip() for l in src.splitlines() if re.match(r"\s*#\s*\|", l)]


def is_plumbing(src: str) -> bool:
    "A cell hidden from the docs that may hold a data table: it starts with `#| hide` or `#| exporti`."
    first = src.lstrip().splitlines()[0] if src.strip() else ""
    return re.fullmatch(r"#\|\s*(hide|exporti)\s*", first) is not None


def code_lines(src: str) -> list[str]:
    "The lines that count towards a cell's length: not blank, not a `#|` directive."
    return [l for l in src.splitlines() if l.strip() and not re.match(r"\s*#\s*\|", l)]


def fail_if(offenders: list[str], rule: str) -> None:
    "Fail with every offender listed, one a line, without a traceback of this file."
    if offenders: pytest.fail(f"{len(offenders)} offender(s) of the rule '{rule}':\n  " + "\n  ".join(offenders),
                              pytrace=False)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 9, [p.name for p in NOTEBOOKS]


def test_no_code_cell_over_30_lines():
    offenders = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            if cell["cell_type"] != "code" or is_plumbing(src := source(cell)): continue
            if (n := len(code_lines(src))) > MAX_CELL_LINES: offenders.append(f"{where(nb, i, cell)}: {n} lines")
    fail_if(offenders, f"no code cell over {MAX_CELL_LINES} lines (#| hide/#| exporti excepted)")


def test_no_code_line_over_110_characters():
    offenders = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            if cell["cell_type"] != "code": continue
            for line in source(cell).splitlines():
                if len(line) > MAX_LINE: offenders.append(f"{where(nb, i, cell)}: {len(line)} chars: {line[:60]}…")
    fail_if(offenders, f"no line of a code cell over {MAX_LINE} characters")


def test_the_book_stands_alone():
    offenders = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            for what, text in (("source", source(cell)), ("output", output_text(cell))):
                for m in OUTSIDE_WORDS.finditer(text):
                    context = text[max(0, m.start() - 30):m.end() + 30].replace("\n", "⏎")
                    offenders.append(f"{where(nb, i, cell)} {what}: {m[0]!r} in …{context}…")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    offenders += [f"README.md: {m[0]!r}" for m in OUTSIDE_WORDS.finditer(readme)]
    fail_if(offenders, "no words that refer to what the reader does not have")


def test_no_absolute_machine_paths_in_notebooks_or_readme():
    offenders = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            for what, text in (("source", source(cell)), ("output", output_text(cell))):
                offenders += [f"{where(nb, i, cell)} {what}: …{p}…" for p in machine_paths(text)]
    offenders += [f"README.md: …{p}…" for p in machine_paths((ROOT / "README.md").read_text(encoding="utf-8"))]
    fail_if(offenders, "print a file's name or a path relative to TINY_GPT_DATA, "
                       "never an absolute path of the machine that ran it")


def test_import_cells_are_hidden_and_the_notebook_is_framed():
    "Cell 0 `#| default_exp`; every code cell above the title hidden; the last cell the hidden export."
    offenders = []
    hidden = {"hide", "export", "exporti", "default_exp"}  # `#| export` cells show no code in the docs
    for nb in NOTEBOOKS:
        cs = cells(nb)
        first = source(cs[0]) if cs else ""
        if not re.match(r"#\|\s*default_exp\s+\S+", first.strip()):
            offenders.append(f"{nb.relative_to(ROOT)} cell 0: not '#| default_exp MODULE' ({first[:40]!r})")
        title = next((i for i, c in enumerate(cs) if c["cell_type"] == "markdown"), len(cs))
        for i, cell in enumerate(cs[:title]):
            names = {re.match(r"\s*#\s*\|\s*([\w-]+)", d)[1] for d in directives(source(cell))}
            if cell["cell_type"] == "code" and not names & hidden:
                offenders.append(f"{where(nb, i, cell)}: an import cell shown in the docs (add '#| hide')")
        last = source(cs[-1]) if cs else ""
        if not (last.strip().startswith("#| hide") and "nbdev_export()" in last):
            offenders.append(f"{nb.relative_to(ROOT)} last cell: not '#| hide' + 'nbdev.nbdev_export()'")
    fail_if(offenders, "the import cells are hidden in every notebook")


@pytest.mark.parametrize("flag, guard", [("cuda", "if gpu_cell_ready():"), ("gpt2", "if gpt2_cell_ready(")])
def test_every_flagged_cell_is_guarded_and_imports_nothing(flag, guard):
    "A reader without a GPU or GPT-2's weights runs every notebook to its end: such cells skip themselves."
    offenders = []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            src = source(cell)
            if cell["cell_type"] != "code" or f"#| {flag}" not in directives(src): continue
            if guard not in src: offenders.append(f"{where(nb, i, cell)}: no '{guard}'")
            if re.search(r"^\s*(import|from)\s", src, re.MULTILINE): offenders.append(f"{where(nb, i, cell)}: imports")
    fail_if(offenders, f"#| {flag} cells hold no import and run their body under '{guard}'")


def test_no_runtime_module_imports_a_dev_only_package():
    "matplotlib, transformers, nbdev, ... are dev extras: importing every module of tiny_gpt needs none of them."
    import configparser
    import subprocess
    import sys
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    name = lambda req: re.split(r"[<>=!~ \[]", req)[0].lower().replace("-", "_")
    runtime = {name(r) for r in cfg["DEFAULT"]["requirements"].split()}
    dev_only = {name(r) for r in cfg["DEFAULT"]["dev_requirements"].split()} - runtime
    dev_only = {"material" if n == "mkdocs_material" else n for n in dev_only}
    code = ("import importlib, pkgutil, sys, tiny_gpt\n"
            "for m in pkgutil.iter_modules(tiny_gpt.__path__): importlib.import_module('tiny_gpt.' + m.name)\n"
            f"print(sorted(set({sorted(dev_only)!r}) & {{n.split('.')[0] for n in sys.modules}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"runtime modules import dev-only packages: {out.stdout.strip()}"


def _readme_tool():
    import importlib
    import sys
    sys.path.insert(0, str(ROOT / "tools"))
    try: return importlib.import_module("readme")
    finally: sys.path.remove(str(ROOT / "tools"))


def test_performance_table_renders_results_rows():
    readme = _readme_tool()
    results = {"bench_prepare": {"date": "2026-01-02", "command": "python benchmarks/bench_prepare.py --mb 10",
                                 "notes": "", "machine": {"cpus": 2, "platform": "Linux", "python": "3.11.7",
                                                          "versions": {"torch": "2.13.0"}, "load_1min": 0.5},
                                 "rows": [{"what": "prepare | 10 MB", "ours": "22.9 MB/s", "baseline": "10.3 MB/s",
                                           "ratio": 2.2233, "target": "≥ 2×", "passed": True},
                                          {"what": "dataset", "ours": "0.019 s", "baseline": "25.8 s",
                                           "ratio": 1352.4, "target": "", "passed": False}]}}
    assert readme.performance_table(results, ["bench_dataset", "bench_prepare"]) == (
        "**prepare** — measured 2026-01-02 on 2 CPUs, Linux, Python 3.11.7, torch 2.13.0, load 0.5; "
        "`python benchmarks/bench_prepare.py --mb 10`\n\n"
        "| what | tiny_gpt | baseline | ratio | target | met |\n|---|---|---|---|---|---|\n"
        "| prepare \\| 10 MB | 22.9 MB/s | 10.3 MB/s | 2.2× | ≥ 2× | yes |\n"
        "| dataset | 0.019 s | 25.8 s | 1,352× |  | **no** |\n\n"
        "Not recorded yet: `python benchmarks/bench_dataset.py`.")


def test_readme_table_is_what_results_json_gives(tmp_path, monkeypatch):
    "The committed table is current, and a new result makes it stale (what `build_docs.py --check` fails on)."
    readme = _readme_tool()
    assert readme.fill_performance(check=True), "run `python tools/readme.py` and commit nbs/index.ipynb, README.md"
    changed = json.loads(readme.RESULTS.read_text(encoding="utf-8")) if readme.RESULTS.exists() else {}
    changed["bench_new"] = {"date": "2026-01-02", "machine": {}, "command": "", "notes": "", "rows": []}
    (tmp_path / "results.json").write_text(json.dumps(changed), encoding="utf-8")
    monkeypatch.setattr(readme, "RESULTS", tmp_path / "results.json")
    assert not readme.fill_performance(check=True)


def test_the_notebook_runner_skips_what_nbdev_test_skips_but_runs_cuda_cells(tmp_path):
    "tools/run_notebooks.py: `#| notest` and `#| eval: false` cells skipped; `#| cuda` cells run and guard themselves."
    import importlib
    import sys
    import nbformat
    sys.path.insert(0, str(ROOT / "tools"))
    try: runner = importlib.import_module("run_notebooks")
    finally: sys.path.remove(str(ROOT / "tools"))
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("#| notest\nraise RuntimeError('a notest cell ran')"),
        nbformat.v4.new_code_cell("#| eval: false\nraise RuntimeError('an eval: false cell ran')"),
        nbformat.v4.new_code_cell("#| cuda\nprint('cuda cell ran')"),
    ])
    path = tmp_path / "flags.ipynb"
    nbformat.write(nb, path)
    runner.run_notebook(path, runner.skipped_flags(set()), timeout=120, save=True)
    cells_after = nbformat.read(path, as_version=4).cells
    assert cells_after[2].outputs[0]["text"] == "cuda cell ran\n"
    assert not cells_after[0].outputs and "tags" not in cells_after[0].metadata  # skipped, saved as it was
    test_run = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("#| notest\nraise RuntimeError('ran')")])
    nbformat.write(test_run, path)
    with pytest.raises(Exception, match="ran"):  # --flags notest switches the cell on
        runner.run_notebook(path, runner.skipped_flags({"notest"}), timeout=120)


def test_the_notebook_runner_skips_exactly_the_cells_nbdev_test_skips():
    "On every cell of every notebook, run_notebooks' skip decision is nbdev_test's (nbdev's own directive parser)."
    import importlib
    import sys
    import nbformat
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    sys.path.insert(0, str(ROOT / "tools"))
    try: runner = importlib.import_module("run_notebooks")
    finally: sys.path.remove(str(ROOT / "tools"))
    tst_flags = set(runner.skipped_flags(set())) | runner.SELF_GUARDED  # nbdev_test skips every tst_flag
    differ = []
    for path in NOTEBOOKS:
        ours = set(runner.cells_to_skip(nbformat.read(path, as_version=4), tst_flags))
        nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
        def nbdev_skips(c) -> bool:  # nbdev.test.test_nb's rule for a code cell
            direc = getattr(c, "directives_", {}) or {}
            return ("nbdev_export" + "(" in c.source or direc.get("eval:", [""])[0].lower() == "false"
                    or bool(tst_flags & direc.keys()))
        theirs = {i for i, c in enumerate(nb.cells) if c.cell_type == "code" and nbdev_skips(c)}
        differ += [f"{path.name} cell {i}" for i in sorted(ours ^ theirs)]
    assert not differ, differ


EXPORT = re.compile(r"^\s*#\s*\|\s*export[si]?\b", re.MULTILINE)
HIDDEN = re.compile(r"^\s*#\s*\|\s*hide\b", re.MULTILINE)


def _code_cells(nb: Path) -> list[tuple[int, str]]:
    "(cell number, source) of the code cells a reader meets: hidden non-exported cells (tests) left out."
    return [(i, source(c)) for i, c in enumerate(cells(nb)) if c["cell_type"] == "code"
            and (EXPORT.search(source(c)) or not HIDDEN.search(source(c)))]


def test_at_most_three_export_cells_before_an_example():
    "A map before machinery: after three exported definitions in a row, the reader sees one of them at work."
    offenders = []
    for nb in NOTEBOOKS:
        run: list[int] = []
        for i, src in _code_cells(nb):
            run = run + [i] if EXPORT.search(src) else []
            if len(run) == 4: offenders.append(f"{nb.name} cells {run[0]}..{run[-1]}")
    assert not offenders, offenders


def test_every_patch_is_followed_by_an_example_calling_it():
    "A class that grows with @patch shows each new method at work in the next code cell the reader sees."
    offenders = []
    for nb in NOTEBOOKS:
        code = _code_cells(nb)
        for (i, src), nxt in zip(code, code[1:] + [(None, "")]):
            if not (EXPORT.search(src) and "@patch" in src): continue
            names = [n for n in re.findall(r"^def (\w+)\(", src, re.MULTILINE) if not n.startswith("__")]
            example = "" if EXPORT.search(nxt[1]) else nxt[1]
            if not example.strip() or (names and not any(re.search(rf"\b{n}\b", example) for n in names)):
                offenders.append(f"{nb.name} cell {i} ({', '.join(names) or 'dunder methods'})")
    assert not offenders, offenders


def test_every_chapter_ends_with_a_summary():
    "The last section of every chapter tells the reader what they can now do."
    offenders = []
    for nb in NOTEBOOKS:
        if not nb.name[0].isdigit(): continue
        headings = [l for c in cells(nb) if c["cell_type"] == "markdown" for l in source(c).splitlines()
                    if re.match(r"#{2} ", l)]
        if not headings or not re.search(r"summary|what you can do", headings[-1], re.IGNORECASE):
            offenders.append(f"{nb.name}: last section {headings[-1] if headings else None!r}")
    assert not offenders, offenders


def test_ci_runs_the_readme_test_command():
    "The README's one test command is what CI runs, each half on a line of its own (so `set -e` stops on it)."
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"## Tests.*?```sh\n([^\n]+)\n```", readme, re.DOTALL)[1]
    ci_lines = [l.split("#")[0].strip() for l in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    halves = [h.strip() for h in command.split("&&")]
    assert halves[0].startswith("python tools/run_notebooks.py") and all(h in ci_lines for h in halves), halves


def test_readme_names_every_corpus_origin_and_checksum():
    "The Data section gives the address and SHA-256 the library itself checks against."
    from tiny_gpt.io import CORPUS_SHA256, VERDICT_URL
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shakespeare = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    for needed in (VERDICT_URL, shakespeare, *CORPUS_SHA256.values()):
        assert needed in readme, f"README.md does not mention {needed}"
    assert set(CORPUS_SHA256) == {"the-verdict.txt", "tinyshakespeare.txt"}, "a new corpus: add it to the Data section"


DRAWS = re.compile(r"^(?!\s*#).*\b(?:plt\.(?:show|plot|subplots|figure)|\.plot\(|\.imshow\()", re.MULTILINE)
MAX_FIGURE_BYTES = 150_000


def test_every_drawing_cell_stores_its_figure():
    "A cell that draws keeps its figure as a PNG output (under 150 KB), so the site shows it."
    import base64
    missing, heavy = [], []
    for nb in NOTEBOOKS:
        for i, cell in enumerate(cells(nb)):
            if cell["cell_type"] != "code" or not DRAWS.search(source(cell)): continue
            if re.match(r"\s*#\|\s*(cuda|gpt2)", source(cell)): continue  # skips itself without a GPU or weights
            if EXPORT.search(source(cell)): continue  # defines a plotting function (e.g. plot_values): draws nothing
            pngs = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if not pngs: missing.append(f"{nb.name} cell {i} ({cell.get('id')})")
            heavy += [f"{nb.name} cell {i}: {len(base64.b64decode(p)):,} bytes" for p in pngs
                      if len(base64.b64decode(p)) > MAX_FIGURE_BYTES]
    assert not missing, "cells that draw but store no PNG (run the notebook without MPLBACKEND=Agg):\n" + "\n".join(missing)
    assert not heavy, "figures over 150 KB:\n" + "\n".join(heavy)


def test_the_gpu_benchmark_refuses_without_a_gpu_in_one_line(tmp_path):
    "CI never runs bench_gpu.py; without a GPU it says so in one line and writes nothing."
    import os, subprocess, sys
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--out", str(tmp_path / "gpu.json")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and r.stderr == "bench_gpu: needs a CUDA GPU, and torch sees none: run it on a GPU machine\n"
    assert not (tmp_path / "gpu.json").exists()


def test_the_readme_lists_every_chapter_and_the_sidebar_every_notebook():
    "A new chapter gets its row in the README's stage table (with its module) and its place in the site's sidebar."
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sidebar = (ROOT / "nbs" / "sidebar.yml").read_text(encoding="utf-8")
    missing = []
    for nb in NOTEBOOKS:
        if f"- {nb.name}" not in sidebar: missing.append(f"sidebar.yml: {nb.name}")
        if nb.name == "index.ipynb": continue
        module = json.loads(nb.read_text(encoding="utf-8"))["cells"][0]["source"]
        module = "".join(module).split("default_exp", 1)[1].strip()
        if not re.search(rf"\| \[[^]]+\]\(nbs/{re.escape(nb.name)}\) \| `tiny_gpt\.{module}` \|", readme):
            missing.append(f"README.md stage table: {nb.name} (`tiny_gpt.{module}`)")
    assert not missing, "\n".join(missing)
