"""Model FLOPs of a training step or a scoring pass, counted from the model's real shapes: the one count behind
every FLOP/s and MFU figure ftkit reports (``ftkit estimate`` and the benchmarks).

What is counted (2 FLOPs per multiply-add), per row of ``L`` real tokens:

- every matmul of the decoder layers (q, k, v, o projections; the MLP's gate/up/down or up/down) on every real
  token: ``2 x (their weights) x L``; the input embedding is a lookup, not a matmul, and is not counted;
- attention: scores (Q K^T) and the weighted sum (P V) over the keys a causal token sees, ``L (L + 1) / 2`` pairs
  a row: ``2 x 2 x heads x head_dim`` FLOPs a pair;
- the LM head only on the positions whose logits are needed: the prediction targets when training (ftkit projects
  only those, see :class:`ftkit.train.trainer.CountingTrainer`), one position a row when scoring a label. A trainer
  that projects every position does more work than this count, which is the point: MFU measures useful work.
- LoRA adapters: ``r x (in + out)`` multiply-adds a token for each adapted module.

Backward: a frozen matmul costs 1x its forward (the gradient of its input only), a trained one 2x (input and weight
gradients), attention 2x its forward; layers below ``trainable_layers`` have no backward at all (backpropagation
stops above them), and with LoRA the lowest layer computes only the gradients that lead to an adapter. With
attention's pairs counted as a full square instead of causal, the count equals what ``torch.utils.flop_counter``
measures on a real forward + backward (tests/test_flops.py). Norms, activations, RoPE, softmax and the loss are
element-wise and left out (memory bound and a small share of FLOPs, though not of time: benchmarks/profile_step.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# model types whose MLP is up/down only (no gate projection)
UNGATED_MLP = ("gpt2", "gpt_neox", "gptj", "opt", "falcon", "phi", "starcoder2", "bloom")
ALL_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that its FLOPs depend on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool = True
    """Llama-style MLP with gate, up and down projections (else up and down only)."""

    @classmethod
    def from_config(cls, config) -> Shape:
        """The shape of a transformers config (a multimodal config's ``text_config``)."""
        c = getattr(config, "text_config", None) or config
        heads = c.num_attention_heads
        return cls(
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            heads=heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads,
            intermediate=c.intermediate_size,
            vocab=c.vocab_size,
            gated_mlp=getattr(c, "model_type", "") not in UNGATED_MLP,
        )

    def modules(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each matmul of one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        mlp = {"up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        if self.gated_mlp:
            mlp["gate_proj"] = (self.hidden, self.intermediate)
        return {
            "q_proj": (self.hidden, q),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden),
            **mlp,
        }

    def layer_macs(self) -> int:
        """Multiply-adds of one decoder layer's matmuls per token."""
        return sum(i * o for i, o in self.modules().values())

    def matmul_parameters(self) -> int:
        """Weights of the decoder layers' matmuls (what the 4 x / 6 x parameters rules of thumb should count)."""
        return self.layers * self.layer_macs()


@dataclass(frozen=True)
class Flops:
    """FLOPs of some work, split into forward and backward."""

    forward: float
    backward: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.forward + other.forward, self.backward + other.backward)


def attended_pairs(lengths: Iterable[int]) -> int:
    """Query-key pairs causal attention computes over rows of these real lengths."""
    return sum(n * (n + 1) // 2 for n in lengths)


def training_flops(
    shape: Shape,
    lengths: Iterable[int],
    targets: int,
    lora_r: int | None = 8,
    lora_modules: Iterable[str] = ALL_MODULES,
    trainable_layers: int | None = None,
) -> Flops:
    """FLOPs of training on rows of real ``lengths`` with ``targets`` prediction-target positions in all.

    ``lora_r`` None means full fine-tuning of the trained layers (their weights get gradients; the embedding and
    LM head stay frozen here, as ftkit's full fine-tuning with ``trainable_layers`` leaves them; without
    ``trainable_layers`` the LM head's weight gradient is counted too). ``trainable_layers`` counts backward work
    for the last N layers only.
    """
    lengths = list(lengths)
    tokens, pairs = sum(lengths), attended_pairs(lengths)
    trained = shape.layers if trainable_layers is None else min(trainable_layers, shape.layers)
    layer = 2 * shape.layer_macs() * tokens
    attn = 4 * shape.heads * shape.head_dim * pairs
    head = 2 * shape.hidden * shape.vocab * targets
    fwd = shape.layers * (layer + attn) + head
    # backward through the trained layers: input gradients of every matmul (1x) and attention (2x)
    bwd = trained * (layer + 2 * attn) + head
    modules, lora_modules = shape.modules(), [m for m in lora_modules if m in shape.modules()]
    if lora_r is None:
        bwd += trained * layer  # weight gradients of the trained layers
        if trainable_layers is None:
            bwd += head
    else:
        adapter = 2 * lora_r * sum(sum(modules[m]) for m in lora_modules) * tokens
        fwd += trained * adapter
        bwd += 2 * trained * adapter
    if lora_r is not None:
        bwd -= _skipped_in_lowest_layer(shape, lora_r, lora_modules, tokens, pairs)
    return Flops(float(fwd), float(bwd))


def _skipped_in_lowest_layer(shape: Shape, lora_r: int, lora_modules: list[str], tokens: int, pairs: int) -> int:
    """Backward work autograd skips in the lowest LoRA layer: nothing below it needs a gradient (frozen embedding,
    norms and layers), so its q/k/v projections need no input gradient, and of attention's four backward products
    (dQ, dK, dV, dP) only those leading to an adapted q, k or v are computed."""
    modules = shape.modules()
    qkv = ("q_proj", "k_proj", "v_proj")
    skipped = 2 * sum(modules[m][0] * modules[m][1] for m in qkv) * tokens
    skipped += 2 * lora_r * sum(modules[m][0] for m in qkv if m in lora_modules) * tokens
    q, k, v = (m in lora_modules for m in qkv)
    product = 2 * shape.heads * shape.head_dim * pairs
    skipped += product * ((not q) + (not k) + (not v) + (not (q or k)))
    return skipped


def scoring_flops(shape: Shape, lengths: Iterable[int], head_positions: int) -> Flops:
    """FLOPs of forward passes over rows of real ``lengths`` that project ``head_positions`` onto the vocabulary."""
    lengths = list(lengths)
    layer = 2 * shape.layer_macs() * sum(lengths) + 4 * shape.heads * shape.head_dim * attended_pairs(lengths)
    return Flops(float(shape.layers * layer + 2 * shape.hidden * shape.vocab * head_positions))
