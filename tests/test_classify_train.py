"""Classifiers through the library's `train` (tiny_gpt.classify.classification_task): exact resume with and
without LoRA, what the checkpoint carries, loading it back, refusals. Everything pinned to the CPU."""
import random

import pytest
import torch
from torch.utils.data import TensorDataset

from tiny_gpt.checks import BadInput
from tiny_gpt.classify import (classification_loader, classification_task, classifier_from_checkpoint,
                               to_classifier)
from tiny_gpt.lora import replace_linear_with_lora
from tiny_gpt.model import GPTModel
from tiny_gpt.tokenizers import CharTokenizer
from tiny_gpt.train import load_checkpoint, model_from_checkpoint, train

TOK = CharTokenizer("_abcdefgh")  # "_" (id 0) pads
CFG = {"vocab_size": TOK.get_n_vocab_tokens(), "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
       "drop_rate": 0.1, "qkv_bias": True}  # dropout on: the resume must restore the random generators too
LABELS, MAX_LEN, LORA = ["no a", "has a"], 12, (2, 4.0)


def texts(n: int, seed: int) -> TensorDataset:
    "Random texts of 3 to 12 characters, padded, labelled by whether they hold an 'a'."
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, MAX_LEN))) for _ in range(n)]
    ids = [TOK.encode(w) + [0] * (MAX_LEN - len(w)) for w in words]
    return TensorDataset(torch.tensor(ids), torch.tensor([int("a" in w) for w in words]))


TRAIN, VAL = texts(48, 1), texts(16, 2)


def classifier(lora: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = to_classifier(GPTModel(CFG), len(LABELS), trainable="all")
    if lora:
        for p in model.parameters(): p.requires_grad = False
        replace_linear_with_lora(model, *LORA)
    return model


def task(lora: bool, labels=LABELS):
    return classification_task(labels, MAX_LEN, pad_token_id=0, position="last_real", lora=LORA if lora else None)


def run(folder, lora: bool, labels=LABELS, **kw):
    model = classifier(lora)
    val = classification_loader(VAL, batch_size=8, shuffle=False, drop_last=False)
    history = train(model, classification_loader(TRAIN, batch_size=8, seed=7), val, device="cpu", out_dir=folder,
                    tokenizer=TOK, task=task(lora, labels), max_steps=9, lr=3e-3, warmup_steps=2,
                    eval_interval=4, eval_iters=2, log_interval=2, grad_accum_steps=1, progress=False, **kw)
    return history, model


@pytest.mark.parametrize("lora", [False, True])
def test_a_stopped_classifier_run_resumes_bit_for_bit(tmp_path, lora):
    straight_h, straight = run(tmp_path / "straight", lora)
    stopped_h, _ = run(tmp_path / "resumed", lora, stop_after=7)  # past an epoch (6 batches): a new order
    assert stopped_h["stopped_at"]["step"] == 7
    resumed_h, resumed = run(tmp_path / "resumed", lora, resume=True)
    names = [n for n, _ in straight.named_parameters()]
    assert names == [n for n, _ in resumed.named_parameters()]
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))
    assert straight_h["log"]["loss"] == resumed_h["log"]["loss"]
    assert straight_h["eval"]["val_accuracy"] == resumed_h["eval"]["val_accuracy"]
    assert all(0 <= a <= 1 for a in straight_h["eval"]["val_accuracy"])
    if lora:  # only the adapters moved: the wrapped Linear weights are as they were built
        assert torch.equal(straight.out_head.linear.weight, classifier(True).out_head.linear.weight)
        assert not torch.equal(straight.out_head.lora.B, torch.zeros_like(straight.out_head.lora.B))


@pytest.mark.parametrize("lora", [False, True])
def test_the_checkpoint_carries_what_rebuilds_the_classifier(tmp_path, lora):
    _, trained = run(tmp_path, lora)
    ckpt = load_checkpoint(tmp_path)
    info = ckpt["task"]
    assert (info["name"], info["labels"], info["n_out"], info["max_length"]) == ("classification", LABELS, 2, 12)
    assert (info["pad_token_id"], info["position"]) == (0, "last_real")
    assert info["lora"] == ({"rank": 2, "alpha": 4.0} if lora else None)
    assert ckpt["tokenizer"] == {"kind": "char", "chars": "_abcdefgh"}
    back, tok, back_info = classifier_from_checkpoint(tmp_path, labels=LABELS)
    assert back_info == info and tok.encode("bad") == TOK.encode("bad") and not back.training
    x = VAL.tensors[0]
    with torch.no_grad(): assert torch.equal(back(x), trained.eval()(x))  # the same logits, to the bit
    if lora:
        with pytest.raises(BadInput, match="holds LoRA adapters: .* classify.classifier_from_checkpoint"):
            model_from_checkpoint(tmp_path)
    else:  # the generic loader reads the head's size from the checkpoint too
        plain, _ = model_from_checkpoint(tmp_path)
        assert plain.out_head.out_features == 2
        with torch.no_grad(): assert torch.equal(plain(x), trained(x))


def test_other_labels_are_refused_in_one_line(tmp_path):
    run(tmp_path, lora=False, stop_after=3)
    with pytest.raises(BadInput) as e: classifier_from_checkpoint(tmp_path, labels=["spam", "ham"])
    message = str(e.value)
    assert "classifies into ['no a', 'has a'], not ['spam', 'ham']" in message and "\n" not in message
    with pytest.raises(BadInput, match=r"trained for another task \(labels: "):  # resuming with other labels
        run(tmp_path, lora=False, labels=["x", "y"], resume=True)
    with pytest.raises(BadInput, match="not a classifier"):  # a language model's checkpoint
        torch.manual_seed(0)
        lm = classification_loader(TRAIN, batch_size=8)  # next-token targets: the inputs shifted
        train(GPTModel(CFG), [(x, torch.roll(x, -1, 1)) for x, _ in lm], device="cpu", out_dir=tmp_path / "lm",
              max_steps=1, progress=False)
        classifier_from_checkpoint(tmp_path / "lm")


def test_a_bad_position_is_refused():
    with pytest.raises(ValueError, match="position must be 'last' or 'last_real'"):
        classification_task(LABELS, MAX_LEN, position="first")
