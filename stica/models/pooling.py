"""Pooling of a video feature map (N, D, t, h, w) to one D vector per map (paper eq. 4, sec. 3.3).

``avg``: spatial then temporal average (P_t o P_s).

``transformer``, two styles:

- ``official`` (the paper profile): the encoder of the authors' released code. Spatial average,
  then the t time steps resampled to ``tokens`` steps by adaptive average pooling (a 3- or 2-step
  temporal crop of a 4-step map becomes 4 tokens), then post-LN layers whose attention has only
  query and key projections (values and output are the tokens themselves), FFN 2048 with GELU,
  LayerNorm eps 1e-12, weights N(0, 0.02); no position embeddings; the output is token 0.
  2 layers at D = 512 hold 5.25 M parameters (Table 1d: +5.2 M).
- ``ours``: stica's first design, kept for ablations: learned absolute position embeddings
  (temporal crops pass ``time_offset``, their first step in the full map), pre-LN
  ``nn.TransformerEncoder`` layers with FFN = D and a final LayerNorm, mean over the tokens.

Every pooling is called as ``pool(fmap, time_offset=None, tokens=None)``; arguments a style does
not use are ignored, so callers need not know the style.

Every pooling starts with the spatial average, so all it reads of a map is its sequence of
spatially averaged time steps, the "tokens" (N, t, D). ``pool.pool_tokens([(tokens, time_offset),
...], tokens=T)`` pools several sets of tokens at once: sets with the same number of steps after
resampling share ONE transformer call (the feature crops of a training step and its full views, see
:func:`stica.models.crops.embed_crops`). The transformers have no batch statistics, so a set pools
to the same values alone or with others.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from stica.determinism import take_rows
from stica.errors import SticaError

POSITION_INIT_STD = 0.02  # ViT/BERT-style; non-zero so that token order matters from step 0
# the released code's encoder: FFN width, LayerNorm eps and initialisation (BERT/XLM style)
OFFICIAL_FFN_DIM = 2048
OFFICIAL_LN_EPS = 1e-12
OFFICIAL_INIT_STD = 0.02


TokenSet = tuple[torch.Tensor, torch.Tensor | None]  # tokens (N, t, D), time_offset (N,) or None


def spatial_tokens(fmap: torch.Tensor) -> torch.Tensor:
    """The spatial average of each time step, token-major.

    Shape:
        (N, D, t, h, w) -> (N, t, D), contiguous
    """
    # contiguous tokens: the encoders' linear layers are much slower on the transposed view
    return fmap.mean(dim=(3, 4)).transpose(1, 2).contiguous()


def _encode_by_length(
    token_sets: list[torch.Tensor], encode: Callable[[torch.Tensor], torch.Tensor]
) -> list[torch.Tensor]:
    """``encode`` each (N_i, t_i, D) set; sets of equal t_i go through one call, concatenated."""
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(token_sets):
        by_length.setdefault(x.shape[1], []).append(i)
    out: list[torch.Tensor | None] = [None] * len(token_sets)
    for members in by_length.values():
        sizes = [token_sets[i].shape[0] for i in members]
        if len(members) == 1:
            pooled = [encode(token_sets[members[0]])]
        else:
            pooled = encode(torch.cat([token_sets[i] for i in members])).split(sizes)
        for i, z in zip(members, pooled, strict=True):
            out[i] = z
    return out


@functools.lru_cache(maxsize=32)
def _resampling(
    steps: int,
    tokens: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Adaptive average pooling from ``steps`` to ``tokens`` steps as a matrix: token i averages
    steps [floor(i * steps / tokens), ceil((i + 1) * steps / tokens)), torch's bins. A matmul,
    not ``adaptive_avg_pool1d``, whose CUDA backward adds with atomics (nondeterministic). Built
    once per device and dtype.

    Shape: -> (tokens, steps)
    """
    weights = torch.zeros(tokens, steps)
    for i in range(tokens):
        lo, hi = (i * steps) // tokens, -((-(i + 1) * steps) // tokens)
        weights[i, lo:hi] = 1.0 / (hi - lo)
    return weights.to(device, dtype, non_blocking=True)  # no stream sync


class SequencePool(nn.Module):
    """A pooling that reads only the spatially averaged time steps of a map (every kind here).

    Subclasses implement :meth:`pool_tokens`; calling the module pools one map.

    Shape:
        fmap (N, D, t, h, w), time_offset (N,) long or None, tokens int or None -> (N, D)
    """

    def forward(
        self,
        fmap: torch.Tensor,
        time_offset: torch.Tensor | None = None,
        tokens: int | None = None,
    ) -> torch.Tensor:
        return self.pool_tokens([(spatial_tokens(fmap), time_offset)], tokens)[0]

    def pool_tokens(
        self, token_sets: list[TokenSet], tokens: int | None = None
    ) -> list[torch.Tensor]:
        """Pool each set; ``tokens`` and the time offsets as in the module docs.

        Shape:
            [(tokens (N_i, t_i, D), time_offset (N_i,) or None)] -> [(N_i, D)]
        """
        raise NotImplementedError


class AvgPool(SequencePool):
    """Average over space, then time.

    Shape:
        (N, D, t, h, w) -> (N, D)
    """

    def pool_tokens(
        self, token_sets: list[TokenSet], tokens: int | None = None
    ) -> list[torch.Tensor]:
        return [x.mean(dim=1) for x, _ in token_sets]


class QKAttention(nn.Module):
    """Multi-head self-attention with query and key projections only (value = input, no output
    projection), as the released code's ``MultiHeadAttention`` with ``qkv_mha=False``.

    Shape:
        (N, t, D) -> (N, t, D)
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, d // self.heads).transpose(1, 2)  # (N, h, t, d/h)

        out = F.scaled_dot_product_attention(
            split(self.q(x)),
            split(self.k(x)),
            split(x),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (N, h, t, d/h)
        return out.transpose(1, 2).reshape(n, t, d)


class OfficialLayer(nn.Module):
    """Post-LN encoder layer: x = LN(x + drop(attn(x))); x = LN(x + drop(FFN(x))).

    Shape:
        (N, t, D) -> (N, t, D)
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = QKAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim, eps=OFFICIAL_LN_EPS)
        self.ffn = nn.Sequential(
            nn.Linear(dim, OFFICIAL_FFN_DIM), nn.GELU(), nn.Linear(OFFICIAL_FFN_DIM, dim)
        )
        self.norm2 = nn.LayerNorm(dim, eps=OFFICIAL_LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attention(x)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class OfficialTransformerPool(SequencePool):
    """The released code's temporal transformer: resample to ``tokens`` steps, encode, token 0.

    Shape:
        fmap (N, D, t, h, w), tokens (int, the full map's T1; None = t) -> (N, D)
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(OfficialLayer(dim, heads, dropout) for _ in range(layers))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=OFFICIAL_INIT_STD)
                nn.init.zeros_(m.bias)

    def pool_tokens(
        self, token_sets: list[TokenSet], tokens: int | None = None
    ) -> list[torch.Tensor]:
        resampled = []
        for x, _ in token_sets:  # (N, t, D)
            if tokens is not None and tokens != x.shape[1]:
                x = torch.matmul(_resampling(x.shape[1], tokens, x.device, x.dtype), x)
            resampled.append(x.contiguous())  # (N, tokens, D)
        return _encode_by_length(resampled, self._encode)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, t, D) -> (N, D): the encoder's output at token 0."""
        for layer in self.layers:
            x = layer(x)
        return x[:, 0]


class TransformerPool(SequencePool):
    """Spatial average, then a temporal transformer with absolute position embeddings ("ours").

    The feed-forward width equals ``dim``; pre-norm layers with a final LayerNorm; the output is
    the mean of the tokens.

    Shape:
        fmap (N, D, t, h, w), time_offset (N,) long or None (= 0) -> (N, D)
    """

    def __init__(
        self, dim: int, layers: int, heads: int, max_time: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.max_time = max_time
        self.position = nn.Parameter(torch.randn(max_time, dim) * POSITION_INIT_STD)  # (Tmax, D)
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )

    def pool_tokens(
        self, token_sets: list[TokenSet], tokens: int | None = None
    ) -> list[torch.Tensor]:
        placed = []
        for x, time_offset in token_sets:  # (N, t, D)
            n, t = x.shape[:2]
            if t > self.max_time:
                raise SticaError(
                    f"param 'pretrain.model.max_time' = {self.max_time} is shorter than the "
                    f"{t} time steps of the video feature map (use more, or fewer frames)"
                )
            steps = torch.arange(t, device=x.device)  # (t,)
            if time_offset is None:
                pos = self.position[steps].unsqueeze(0)  # (1, t, D)
            else:
                # take_rows, not indexing: N crops share rows, whose gradient must sum in a
                # fixed order
                offset = time_offset.to(x.device, non_blocking=True).view(n, 1)
                pos = take_rows(self.position, offset + steps)
            placed.append(x + pos.to(x.dtype))
        return _encode_by_length(placed, lambda x: self.encoder(x).mean(dim=1))


def build_pooling(
    kind: str,
    dim: int,
    layers: int,
    heads: int,
    max_time: int,
    dropout: float = 0.0,
    style: str = "official",
) -> SequencePool:
    """Pooling ``kind`` ("avg" | "transformer", of ``style`` "official" | "ours"), called as
    ``pool(fmap, time_offset=None, tokens=None)`` or ``pool.pool_tokens(token_sets, tokens)``."""
    if kind == "avg":
        return AvgPool()
    if kind != "transformer":
        raise ValueError(f"unknown pooling {kind!r}")
    if style == "official":
        return OfficialTransformerPool(dim, layers, heads, dropout)
    if style == "ours":
        return TransformerPool(dim, layers, heads, max_time, dropout)
    raise ValueError(f"unknown transformer style {style!r}")


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters (Table 1d compares pooling heads by this)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
