"""GPTEmbedding under torch.compile: one graph (fullgraph=True), the eager numbers, and the cheap
checks still in force. Compiling takes seconds, so these live here rather than in the notebook."""
import pytest
import torch

from tiny_gpt.embeddings import GPTEmbedding


@pytest.fixture(scope="module")
def embed():
    torch.manual_seed(0)
    return GPTEmbedding(vocab_size=100, emb_dim=16, context_length=8)


def test_compiles_with_fullgraph_and_matches_eager(embed):
    "No graph break (the id-range check reads values, so it is skipped while compiling)."
    torch._dynamo.reset()
    compiled = torch.compile(embed, fullgraph=True, dynamic=False)
    ids = torch.randint(0, 100, (4, 8))
    reference = embed.tok_emb.weight[ids] + embed.pos_emb.weight[:8]  # indexing, not the module's code path
    torch.testing.assert_close(compiled(ids), reference)
    torch.testing.assert_close(compiled(ids), embed(ids))
    compiled(ids).sum().backward()  # gradients flow through the compiled graph
    assert embed.tok_emb.weight.grad[ids.unique()].abs().sum() > 0


def test_no_graph_break_and_no_host_sync(embed):
    "torch._dynamo.explain: one graph, no break; in eager mode the same call still checks the range."
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(embed)(torch.randint(0, 100, (2, 8)))
    assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 100\), got values from 0 to 100"):
        embed(torch.tensor([[0, 100]]))  # eager on the CPU: the clear error


def test_cheap_checks_hold_under_compile(embed):
    "Shape and length errors cost nothing (no value is read), so the compiled module keeps them."
    torch._dynamo.reset()
    compiled = torch.compile(embed, fullgraph=True, dynamic=False)
    with pytest.raises(Exception, match="seq_len 9 is longer than context_length 8"):
        compiled(torch.zeros(2, 9, dtype=torch.long))
