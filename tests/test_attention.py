"""tiny_gpt.attention against references written independently of it.

The references: numbers computed by hand in plain Python (the chapter's six-word sentence), and a
per-head computation of softmax(Q Kᵀ / √d + mask) V in float64 with its own mask and its own head
slicing, then out_proj. The module uses torch's fused scaled_dot_product_attention instead.
"""
from __future__ import annotations

import math

import pytest
import torch

from tiny_gpt.attention import CausalAttention, MultiHeadAttention

# The chapter's sentence "Attention lets each word look back" and its hand-picked projections.
X = [[0.90, 0.10, 0.40], [0.20, 0.70, 0.10], [0.30, 0.60, 0.20],
     [0.80, 0.20, 0.50], [0.10, 0.90, 0.30], [0.40, 0.30, 0.80]]
WQ = [[0.9, -0.3], [-0.4, 0.8], [0.6, 0.2]]  # (d_in, d_out)
WK = [[0.8, 0.1], [-0.5, 0.9], [0.7, -0.2]]
WV = [[0.3, 0.7], [0.9, 0.2], [0.1, 0.6]]


def _plain_causal_context() -> list[list[float]]:
    "The causal context vectors of the sentence, in plain Python: no torch at all."
    def project(W): return [[sum(x[k] * W[k][j] for k in range(3)) for j in range(2)] for x in X]
    Q, K, V = project(WQ), project(WK), project(WV)
    out = []
    for t in range(6):
        e = [math.exp((Q[t][0] * K[j][0] + Q[t][1] * K[j][1]) / math.sqrt(2)) for j in range(t + 1)]
        w = [v / sum(e) for v in e]
        out.append([sum(w[j] * V[j][c] for j in range(t + 1)) for c in range(2)])
    return out


# The values the chapter prints for the module (4 decimals).
PRINTED_CONTEXT = [[0.4000, 0.8900], [0.5668, 0.5842], [0.5860, 0.5551],
                   [0.5181, 0.7209], [0.6451, 0.5642], [0.5650, 0.6822]]


def _load(layer: torch.nn.Linear, W: list[list[float]]):
    with torch.no_grad(): layer.weight.copy_(torch.tensor(W).T)


def test_six_words_by_hand_match_the_printed_values():
    torch.testing.assert_close(torch.tensor(_plain_causal_context()), torch.tensor(PRINTED_CONTEXT),
                               atol=5e-5, rtol=0)


def test_causal_attention_reproduces_the_six_words():
    ca = CausalAttention(d_in=3, d_out=2, context_length=6, dropout=0.0)
    for layer, W in ((ca.W_query, WQ), (ca.W_key, WK), (ca.W_value, WV)): _load(layer, W)
    out = ca(torch.tensor([X, X]))
    expected = torch.tensor(_plain_causal_context())
    torch.testing.assert_close(out[0].detach(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1].detach(), expected, atol=1e-6, rtol=0)


def test_multi_head_attention_reproduces_the_six_words():
    "One head and an identity out_proj: the fused path gives the hand-computed numbers."
    mha = MultiHeadAttention(d_in=3, d_out=2, context_length=6, dropout=0.5, num_heads=1).eval()
    for layer, W in ((mha.W_query, WQ), (mha.W_key, WK), (mha.W_value, WV)): _load(layer, W)
    with torch.no_grad(): mha.out_proj.weight.copy_(torch.eye(2)); mha.out_proj.bias.zero_()
    out = mha(torch.tensor([X]))
    torch.testing.assert_close(out[0].detach(), torch.tensor(_plain_causal_context()), atol=1e-6, rtol=0)


def reference_attention(mha: MultiHeadAttention | CausalAttention, x: torch.Tensor) -> torch.Tensor:
    "Per head, in float64: softmax(Q_h K_hᵀ / √d_h + mask) V_h; heads concatenated; then out_proj if any."
    x = x.double()
    def linear(layer, inp):
        y = inp @ layer.weight.double().T
        return y if layer.bias is None else y + layer.bias.double()
    n_heads = getattr(mha, "num_heads", 1)
    d = mha.d_out // n_heads
    t = x.shape[1]
    mask = torch.full((t, t), float("-inf"), dtype=torch.float64).triu(1)  # additive: -inf above the diagonal
    heads = []
    for h in range(n_heads):
        cols = slice(h * d, (h + 1) * d)
        q, k, v = (linear(layer, x)[..., cols] for layer in (mha.W_query, mha.W_key, mha.W_value))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d) + mask, dim=-1)  # (b, t, t)
        heads.append(weights @ v)                                                     # (b, t, d)
    context = torch.cat(heads, dim=-1)
    return linear(mha.out_proj, context) if hasattr(mha, "out_proj") else context


SHAPES = [  # batch, seq_len, d_in, d_out, num_heads, context_length, qkv_bias
    (1, 1, 4, 4, 1, 1, False),
    (2, 7, 8, 12, 3, 7, True),
    (3, 16, 16, 32, 4, 20, False),
    (2, 5, 6, 8, 8, 9, True),    # head_dim 1
    (1, 33, 24, 24, 2, 64, True),
]


@pytest.mark.parametrize("b,t,d_in,d_out,n_heads,ctx,qkv_bias", SHAPES)
def test_module_equals_the_explicit_computation(b, t, d_in, d_out, n_heads, ctx, qkv_bias):
    torch.manual_seed(t * 100 + d_out)
    mha = MultiHeadAttention(d_in, d_out, ctx, dropout=0.2, num_heads=n_heads, qkv_bias=qkv_bias).eval()
    x = torch.randn(b, t, d_in)
    out = mha(x)
    assert out.shape == (b, t, d_out) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_attention(mha, x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_causal_attention_equals_the_explicit_computation(qkv_bias):
    torch.manual_seed(1)
    ca = CausalAttention(d_in=10, d_out=6, context_length=12, dropout=0.3, qkv_bias=qkv_bias).eval()
    x = torch.randn(3, 12, 10)
    torch.testing.assert_close(ca(x).double(), reference_attention(ca, x), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("module", ["mha", "causal"])
def test_causality_by_perturbation(module):
    torch.manual_seed(2)
    layer = (MultiHeadAttention(16, 16, 12, dropout=0.0, num_heads=4) if module == "mha"
             else CausalAttention(16, 8, 12, dropout=0.0)).eval()
    x = torch.randn(2, 12, 16)
    out = layer(x)
    for t in (0, 3, 6, 10):
        x2 = x.clone()
        x2[:, t + 1:] = torch.randn_like(x2[:, t + 1:]) * 5  # a different future after position t
        out2 = layer(x2)
        torch.testing.assert_close(out2[:, : t + 1], out[:, : t + 1], atol=1e-6, rtol=0)
        assert (out2[:, t + 1:] - out[:, t + 1:]).abs().amax(dim=-1).gt(1e-4).all()  # the future did change


def test_errors():
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(4\).*e\.g\. 8"):
        MultiHeadAttention(8, 10, 16, 0.0, num_heads=4)
    mha = MultiHeadAttention(8, 8, 16, 0.0, num_heads=2)
    with pytest.raises(ValueError, match="seq_len 17 is longer than context_length 16"):
        mha(torch.zeros(1, 17, 8))
    with pytest.raises(ValueError, match="seq_len 7 is longer than context_length 6"):
        CausalAttention(8, 4, 6, 0.0)(torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match=r"got \(16, 8\); for a single sequence use x.unsqueeze\(0\)"):
        mha(torch.zeros(16, 8))
    with pytest.raises(ValueError, match=r"d_in=8\), got \(1, 4, 6\)"):
        mha(torch.zeros(1, 4, 6))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_heads must be an integer >= 1"):
            MultiHeadAttention(8, 8, 16, 0.0, num_heads=bad)
    for bad in (-0.1, 1.5, "0.1", None):
        with pytest.raises(ValueError, match="dropout must be a probability in"):
            MultiHeadAttention(8, 8, 16, bad, num_heads=2)
    mha(torch.zeros(1, 16, 8))  # exactly context_length is fine


def test_attributes_and_state_dict_follow_the_book():
    mha = MultiHeadAttention(d_in=6, d_out=12, context_length=10, dropout=0.1, num_heads=3, qkv_bias=True)
    assert (mha.num_heads, mha.head_dim, mha.context_length, mha.dropout) == (3, 4, 10, 0.1)
    assert sorted(mha.state_dict()) == sorted(f"{n}.{p}" for n in ("W_query", "W_key", "W_value", "out_proj")
                                              for p in ("weight", "bias"))  # no mask buffer
    assert mha.W_query.weight.shape == (12, 6) and mha.out_proj.weight.shape == (12, 12)
    assert MultiHeadAttention(6, 12, 10, 0.1, 3).W_key.bias is None and mha.out_proj.bias is not None


def test_gradients_flow_and_respect_causality():
    torch.manual_seed(3)
    mha = MultiHeadAttention(8, 8, 10, dropout=0.0, num_heads=2, qkv_bias=True)
    x = torch.randn(2, 10, 8, requires_grad=True)
    mha(x)[:, 4].sum().backward()  # the outputs at position 4 only
    for name, p in mha.named_parameters(): assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad[:, :5].abs().sum(-1).gt(0).all()  # positions 0..4 feed position 4
    assert x.grad[:, 5:].eq(0).all()                # later positions do not, not even by rounding


def test_dropout_only_in_training_mode():
    torch.manual_seed(4)
    mha = MultiHeadAttention(8, 8, 10, dropout=0.5, num_heads=2)
    x = torch.randn(2, 10, 8)
    mha.train()
    assert not torch.allclose(mha(x), mha(x))
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x), atol=0, rtol=0)
    torch.testing.assert_close(mha(x).double(), reference_attention(mha, x), atol=2e-5, rtol=1e-4)
    everything = MultiHeadAttention(8, 8, 10, dropout=1.0, num_heads=2).train()  # every weight dropped:
    out = everything(x)                                                         # out_proj of zeros = its bias
    torch.testing.assert_close(out, everything.out_proj.bias.expand_as(out), atol=0, rtol=0)
    ca = CausalAttention(8, 4, 10, dropout=0.5).train()
    assert not torch.allclose(ca(x), ca(x))
    torch.testing.assert_close(ca.eval()(x), ca(x), atol=0, rtol=0)


def test_compile_fullgraph_gives_the_same_output():
    torch.manual_seed(5)
    mha = MultiHeadAttention(16, 16, 12, dropout=0.1, num_heads=4, qkv_bias=True).eval()
    x = torch.randn(2, 12, 16)
    compiled = torch.compile(mha, fullgraph=True)
    torch.testing.assert_close(compiled(x), mha(x), atol=1e-5, rtol=1e-5)
    # A too-long input is still refused with our message; under fullgraph=True torch wraps the ValueError
    # in its own error (torch._dynamo.exc.Unsupported, a RuntimeError) instead of falling back to eager.
    with pytest.raises((ValueError, RuntimeError), match="seq_len 13 is longer than context_length 12"):
        compiled(torch.randn(2, 13, 16))
    torch.testing.assert_close(compiled(x[:, :5]), mha(x[:, :5]), atol=1e-5, rtol=1e-5)  # shorter: fine


def test_causal_attention_errors_and_the_repr():
    "The chapter's single-head checks, and the repr that prints the heads' layout."
    ca = CausalAttention(3, 2, 6, dropout=0.0)
    with pytest.raises(ValueError, match=r"got \(6, 3\); for a single sequence use x.unsqueeze\(0\)"):
        ca(torch.zeros(6, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq_len, d_in=3\), got \(1, 6, 4\)"):
        ca(torch.zeros(1, 6, 4))
    with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\], got 1.5"):
        CausalAttention(3, 2, 6, dropout=1.5)
    mha = MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0, num_heads=2)
    qkv = [f"  ({n}): Linear(in_features=3, out_features=4, bias=False)" for n in ("W_query", "W_key", "W_value")]
    assert repr(mha).splitlines() == ["MultiHeadAttention(", "  num_heads=2, head_dim=2, context_length=6, dropout=0.0",
                                      *qkv, "  (out_proj): Linear(in_features=4, out_features=4, bias=True)", ")"]


# --- left-padded rows (chapter 5's closing section) -------------------------------------------------------

def test_padded_rows_get_what_they_get_alone_and_padding_is_finite():
    "Each row of a left-padded batch equals the row run alone; padding values never leak; no NaN."
    from tiny_gpt.attention import padded_mask
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_in=8, d_out=12, context_length=16, dropout=0.0, num_heads=3).eval()
    lengths = [1, 16, 5]  # very different lengths, one row of a single position
    rows = [torch.randn(1, n, 8) for n in lengths]
    x = torch.cat([torch.cat([torch.randn(1, 16 - n, 8) * 100, r], 1) for n, r in zip(lengths, rows)])  # junk pads
    pad = torch.tensor([16 - n for n in lengths])
    with torch.no_grad():
        out = mha(x, pad=pad)
        assert torch.isfinite(out).all()
        for i, (n, r) in enumerate(zip(lengths, rows)):
            torch.testing.assert_close(out[i, 16 - n:], mha(r)[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out[i, 16 - n:], reference_attention(mha, r)[0].float(), atol=1e-5, rtol=1e-5)
    m = padded_mask(torch.tensor([2]), start=3, t=2)  # 2 queries after 3 cached keys, 2 of them padding
    assert m[0, 0].int().tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def test_padded_mask_compiles_fullgraph():
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_in=8, d_out=8, context_length=8, dropout=0.0, num_heads=2).eval()
    x, pad = torch.randn(2, 8, 8), torch.tensor([3, 0])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(mha, fullgraph=True)(x, pad=pad), mha(x, pad=pad),
                                   atol=1e-5, rtol=1e-5)
