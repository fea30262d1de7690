"""The package root: every stage's public names importable from `tiny_gpt`, and lazily."""
import subprocess
import sys

STAGE2_API = "env_display_tinygpt_modules, io_load_text_file, RegexTokenizer, TikTokenizer, tiny_data_loader"


def python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_stage2_api_imports_from_the_root():
    assert python(f"from tiny_gpt import {STAGE2_API}; print('ok')") == "ok"


def test_every_public_name_of_every_stage_is_reachable_from_the_root():
    code = ("import importlib, tiny_gpt\n"
            "for stage in tiny_gpt._STAGES:\n"
            "    m = importlib.import_module('tiny_gpt.' + stage)  # a broken or missing stage fails here\n"
            "    for name in m.__all__: assert getattr(tiny_gpt, name) is getattr(m, name), (stage, name)\n"
            "print(len(dir(tiny_gpt)) > 40)")
    assert python(code) == "True"


def test_tokenizing_does_not_import_torch():
    "Worker processes that only tokenize start fast: no torch."
    assert python("import sys; from tiny_gpt import TikTokenizer, BPETokenizer, io_load_text_file; "
                  "print('torch' in sys.modules)") == "False"


def test_unknown_names_raise_attribute_error():
    assert python("import tiny_gpt\ntry: tiny_gpt.nope\nexcept AttributeError as e: print(e)") == \
        "module 'tiny_gpt' has no attribute 'nope'"


def test_star_import_brings_the_stage2_api_and_the_entry_points():
    code = ("from tiny_gpt import *\n"
            f"import tiny_gpt; names = [{', '.join(n.strip() for n in STAGE2_API.split(','))}]\n"
            "assert all(getattr(tiny_gpt, n) is globals()[n] for n in tiny_gpt.__all__)\n"
            "assert 'FORMAT' not in globals() and 'RULE' not in globals()  # no stray constants\n"
            "print(len(tiny_gpt.__all__))")
    assert python(code) == "11"
