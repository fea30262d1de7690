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


# Names two stages define: the root gives the earlier stage's (pretraining's loss functions); the
# classification ones are `from tiny_gpt.classify import ...`, as the book's chapter 6 defines its own.
SHADOWED = {"classify": {"calc_loss_batch", "calc_loss_loader", "evaluate_model"}}


def test_every_public_name_of_every_stage_is_reachable_from_the_root():
    code = ("import importlib, tiny_gpt\n"
            f"shadowed = {SHADOWED!r}\n"
            "for stage in tiny_gpt._STAGES:\n"
            "    m = importlib.import_module('tiny_gpt.' + stage)  # a broken or missing stage fails here\n"
            "    for name in set(m.__all__) - set(tiny_gpt._STAGES) - shadowed.get(stage, set()):  # `train`: the module\n"
            "        assert getattr(tiny_gpt, name) is getattr(m, name), (stage, name)\n"
            "print(len(dir(tiny_gpt)) > 40)")
    assert python(code) == "True"


def test_the_classification_loss_functions_are_not_the_roots():
    "`from tiny_gpt import calc_loss_batch` stays pretraining's; the classification ones live in tiny_gpt.classify."
    code = ("import tiny_gpt, tiny_gpt.train as t, tiny_gpt.classify as c\n"
            "names = ['calc_loss_batch', 'calc_loss_loader', 'evaluate_model']\n"
            "assert all(getattr(tiny_gpt, n) is getattr(t, n) is not getattr(c, n) for n in names)\n"
            "assert set(names) <= set(c.__all__)\n"
            "from tiny_gpt import SpamDataset, calc_accuracy_loader, LoRALayer, replace_linear_with_lora\n"
            "print(SpamDataset is c.SpamDataset, LoRALayer.__module__)")
    assert python(code) == "True tiny_gpt.lora"


def test_no_function_is_named_like_a_stage():
    code = ("import importlib, tiny_gpt\n"
            "print(sorted((s, n) for s in tiny_gpt._STAGES for n in importlib.import_module('tiny_gpt.' + s).__all__\n"
            "             if n in tiny_gpt._STAGES))")
    assert python(code) == "[('train', 'train')]"  # tiny_gpt.train.train, the one exception


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
    assert python(code) == "15"


def test_a_stage_name_is_the_stage_module():
    "`tiny_gpt.train` is the module (its function is `tiny_gpt.train.train`), before and after import."
    code = ("import tiny_gpt, types\n"
            "first = tiny_gpt.train\n"
            "import tiny_gpt.train\n"
            "assert isinstance(first, types.ModuleType) and first is tiny_gpt.train\n"
            "print(callable(tiny_gpt.train.train))")
    assert python(code) == "True"
