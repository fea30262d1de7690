"""LoRA (tiny_gpt.lora): the book's counts, and the equalities that make it safe to use."""
import copy
import io

import pytest
import torch
from torch import nn

from tiny_gpt.classify import CLASSIFY_CONFIG, to_classifier, trainable_parameters
from tiny_gpt.lora import LinearWithLoRA, LoRALayer, merge_lora, replace_linear_with_lora
from tiny_gpt.model import GPTModel, generate, gpt2_preset, init_gpt2_weights

UNTIED = {**CLASSIFY_CONFIG.__dict__, "context_length": 32}  # a small language model, head not tied


def lm(seed=0, rank=4, alpha=8, b_std=0.0):
    "A small GPT wrapped with LoRA; B drawn with std `b_std` (0: as initialised) to stand for training."
    torch.manual_seed(seed)
    model = replace_linear_with_lora(init_gpt2_weights(GPTModel(UNTIED)), rank, alpha).eval()
    for m in model.modules():
        if isinstance(m, LoRALayer) and b_std: nn.init.normal_(m.B, std=b_std)
    return model


def ids(n=12, batch=2, seed=1):
    return torch.randint(0, 50257, (batch, n), generator=torch.Generator().manual_seed(seed))


def test_gpt2_124m_trainable_counts_are_the_books():
    with torch.device("meta"): model = GPTModel(gpt2_preset("gpt2"))
    with torch.device("meta"): model.out_head = nn.Linear(768, 2)
    assert trainable_parameters(model) == 124_441_346
    for p in model.parameters(): p.requires_grad = False  # the book's order: new head, then freeze all
    replace_linear_with_lora(model, rank=16, alpha=16)
    assert trainable_parameters(model) == 2_666_528
    assert all(p.is_meta for p in model.parameters())  # the adapters live where their layers live


def test_chapter_recipe_counts_on_gpt2_shape():
    with torch.device("meta"): model = to_classifier(GPTModel(gpt2_preset("gpt2")))
    assert trainable_parameters(model) == 7_087_872 + 1_536 + 1_538


def test_wrapped_model_gives_the_plain_logits_at_initialisation():
    torch.manual_seed(0)
    plain = init_gpt2_weights(GPTModel(UNTIED)).eval()
    wrapped = replace_linear_with_lora(copy.deepcopy(plain), rank=8, alpha=16)
    with torch.no_grad(): assert torch.equal(wrapped(ids()), plain(ids()))
    assert sum(isinstance(m, LinearWithLoRA) for m in wrapped.modules()) == 2 * 6 + 1


def test_merged_weights_give_the_adapted_logits():
    model = lm(b_std=0.05)
    with torch.no_grad():
        adapted = model(ids())
        merged = merge_lora(copy.deepcopy(model))
        assert not any(isinstance(m, (LinearWithLoRA, LoRALayer)) for m in merged.modules())
        torch.testing.assert_close(merged(ids()), adapted, atol=1e-5, rtol=0)
        assert (adapted - lm(b_std=0.0)(ids())).abs().max() > 1e-2  # B really changed the output


def test_scale_is_alpha_over_rank():
    layer = LoRALayer(6, 5, rank=4, alpha=8)
    nn.init.normal_(layer.B)
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), 2.0 * (x @ layer.A @ layer.B))


def test_lora_works_through_the_kv_cache():
    model = lm(b_std=0.05)
    prompt = ids(n=5, batch=2)
    cached = generate(model, prompt, max_new_tokens=10, context_size=32, use_cache=True)
    plain = generate(model, prompt, max_new_tokens=10, context_size=32, use_cache=False)
    assert torch.equal(cached, plain)
    merged = generate(merge_lora(copy.deepcopy(model)), prompt, max_new_tokens=10, context_size=32)
    assert torch.equal(merged, cached)


def test_state_dict_round_trip():
    model = lm(b_std=0.05)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    again = replace_linear_with_lora(GPTModel(UNTIED), rank=4, alpha=8).eval()
    again.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad(): assert torch.equal(again(ids()), model(ids()))
    assert "trf_blocks.0.att.W_query.lora.A" in model.state_dict()


def test_only_the_adapters_learn_after_freezing():
    torch.manual_seed(0)
    model = to_classifier(init_gpt2_weights(GPTModel(UNTIED)))
    for p in model.parameters(): p.requires_grad = False
    replace_linear_with_lora(model, rank=2, alpha=2)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.endswith(("lora.A", "lora.B")) for n in names)
    model(ids())[:, -1].sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in names)


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_bad_rank_is_one_line(rank):
    with pytest.raises(ValueError, match="rank must be an integer >= 1") as e:
        LoRALayer(4, 4, rank=rank, alpha=1)
    assert "\n" not in str(e.value)
