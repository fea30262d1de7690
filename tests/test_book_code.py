"""The book's own code on tiny_gpt: "Build a Large Language Model (From Scratch)" seeds, builds its loaders,
then its model; saves state dicts from its own `GPTModel`; reads `model.pos_emb`; converts text with
`text_to_token_ids`. A reader with the book open must get the book's weights and numbers here.

`BookGPT` below is a GPT written the way the book's chapter 4 writes it (its own module names: `tok_emb`,
`pos_emb`, `LayerNorm` with `scale` and `shift`, a causal `mask` buffer in every attention), so that the
test compares tiny_gpt with an independent model, not with itself."""
import tiktoken
import torch
from torch import nn

from tiny_gpt.data import tiny_data_loader
from tiny_gpt.io import corpus_path
from tiny_gpt.model import GPTModel
from tiny_gpt.tokenizers import TikTokenizer
from tiny_gpt.train import text_to_token_ids, token_ids_to_text

CFG = {"vocab_size": 50257, "context_length": 32, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "drop_rate": 0.1,
       "qkv_bias": False}


class BookLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.eps, self.scale, self.shift = 1e-5, nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class BookAttention(nn.Module):
    def __init__(self, d, context, dropout, heads, qkv_bias):
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.W_query, self.W_key, self.W_value = (nn.Linear(d, d, bias=qkv_bias) for _ in range(3))
        self.out_proj, self.dropout = nn.Linear(d, d), nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (w(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
                   for w in (self.W_query, self.W_key, self.W_value))
        scores = (q @ k.transpose(2, 3)).masked_fill(self.mask.bool()[:t, :t], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, t, d))


class BookBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["emb_dim"]
        self.att = BookAttention(d, c["context_length"], c["drop_rate"], c["n_heads"], c["qkv_bias"])
        self.ff = nn.Module()
        self.ff.layers = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.norm1, self.norm2, self.drop_shortcut = BookLayerNorm(d), BookLayerNorm(d), nn.Dropout(c["drop_rate"])

    def forward(self, x):
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff.layers(self.norm2(x)))


class BookGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tok_emb = nn.Embedding(c["vocab_size"], c["emb_dim"])
        self.pos_emb = nn.Embedding(c["context_length"], c["emb_dim"])
        self.drop_emb = nn.Dropout(c["drop_rate"])
        self.trf_blocks = nn.Sequential(*[BookBlock(c) for _ in range(c["n_layers"])])
        self.final_norm = BookLayerNorm(c["emb_dim"])
        self.out_head = nn.Linear(c["emb_dim"], c["vocab_size"], bias=False)

    def forward(self, ids):
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1]))
        return self.out_head(self.final_norm(self.trf_blocks(self.drop_emb(x))))


def book_loaders():
    "The book's chapter 5: The Verdict, 90 % to train (shuffled), 10 % to validate."
    ids = TikTokenizer("gpt2").encode(corpus_path("the-verdict.txt").read_text(encoding="utf-8"))
    split = int(0.9 * len(ids))
    T = CFG["context_length"]
    train = tiny_data_loader(torch.tensor(ids[:split]), batch_size=2, max_length=T, stride=T, shuffle=True)
    val = tiny_data_loader(torch.tensor(ids[split:]), batch_size=2, max_length=T, stride=T, shuffle=False,
                           drop_last=False)
    return train, val


def test_the_books_seeding_order_gives_the_books_weights():
    "seed → loaders → model, as the book does it: the same weights as the book's model, tensor for tensor."
    torch.manual_seed(123)
    book_loaders()
    ours = GPTModel(CFG)
    torch.manual_seed(123)
    book = BookGPT(CFG)
    theirs = book.state_dict()
    mine = {k: v for k, v in ours.state_dict().items()}
    assert len(mine) == len(theirs) - CFG["n_layers"]  # the book also stores one causal mask per block
    pairs = [(ours.tok_emb.weight, book.tok_emb.weight), (ours.pos_emb.weight, book.pos_emb.weight),
             (ours.out_head.weight, book.out_head.weight)]
    for a, b in zip(ours.trf_blocks, book.trf_blocks):
        pairs += [(getattr(a.att, n).weight, getattr(b.att, n).weight) for n in ("W_query", "W_key", "W_value", "out_proj")]
        pairs += [(a.ff.layers[i].weight, b.ff.layers[i].weight) for i in (0, 2)]
    assert all(torch.equal(x, y) for x, y in pairs)


def test_a_state_dict_of_the_books_model_loads_and_gives_its_logits(tmp_path):
    torch.manual_seed(0)
    book = BookGPT(CFG).eval()
    with torch.no_grad():
        for p in book.parameters(): p.add_(torch.randn_like(p) * 0.05)  # norms and biases off their start values
    torch.save(book.state_dict(), tmp_path / "model.pth")
    ours = GPTModel(CFG).eval()
    ours.load_state_dict(torch.load(tmp_path / "model.pth", weights_only=True))  # strict
    ids = torch.tensor([[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]])
    with torch.no_grad(): torch.testing.assert_close(ours(ids), book(ids), atol=1e-5, rtol=1e-5)


def test_the_books_helpers_and_names():
    "text_to_token_ids / token_ids_to_text with the book's tiktoken tokenizer, and model.pos_emb for the context."
    tokenizer = TikTokenizer("gpt2").encoding  # the tiktoken.Encoding of tiktoken.get_encoding("gpt2")
    assert isinstance(tokenizer, tiktoken.Encoding)
    ids = text_to_token_ids("Every effort moves you", tokenizer)
    assert ids.tolist() == [[6109, 3626, 6100, 345]]
    assert token_ids_to_text(ids, tokenizer) == "Every effort moves you"
    model = GPTModel(CFG)
    assert model.pos_emb.weight.shape[0] == CFG["context_length"]  # the book's generate_and_print_sample
    assert model.tok_emb is model.emb.tok_emb and "tok_emb.weight" not in model.state_dict()  # our keys stay
