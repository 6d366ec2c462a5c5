"""The STiCA model: video trunk + pooling + head, audio trunk + average pool + head.

The model is rebuilt from its :class:`~stica.config.ModelConfig` (checkpoints store
``dataclasses.asdict(model.config)``; :func:`build_model` takes that dict back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from stica.config import FeatureCropConfig, ModelConfig, from_dict
from stica.models.audio import build_audio_trunk
from stica.models.crops import embed_crops, sample_crops
from stica.models.heads import MLPHead
from stica.models.pooling import TokenSet, build_pooling
from stica.models.video import build_video_trunk
from stica.models.video import video_map_shape as _video_map_shape


class SticaModel(nn.Module):
    """Audio-visual encoder of the paper (eq. 4 + heads); ``config`` is kept as ``model.config``.

    Call the pieces directly for evaluation; call ``model(...)`` (``forward``) for a training
    step so DistributedDataParallel sees one forward per backward.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.video_trunk = build_video_trunk(config.video_trunk, config.width)
        self.audio_trunk = build_audio_trunk(config.audio_trunk, config.width)
        assert self.video_trunk.out_dim == config.video_dim
        assert self.audio_trunk.out_dim == config.audio_dim
        self.video_pool = build_pooling(
            config.pooling,
            config.video_dim,
            config.transformer_layers,
            config.transformer_heads,
            config.max_time,
            config.transformer_dropout,
            config.transformer_style,
        )
        dims = (config.head_hidden, config.embed_dim, config.head_dropout)
        self.video_head = MLPHead(config.video_dim, *dims)
        self.audio_head = MLPHead(config.audio_dim, *dims)

    # ---- video -------------------------------------------------------------------------------

    def video_map_shape(
        self, num_frames: int, height: int, width: int
    ) -> tuple[int, int, int, int]:
        """(D, T1, H1, W1) of the trunk's map for a ``num_frames`` x ``height`` x ``width`` clip."""
        cfg = self.config
        return _video_map_shape(cfg.video_trunk, cfg.width, num_frames, height, width)

    def video_map(self, video: torch.Tensor) -> torch.Tensor:
        """Trunk Ψ (the last residual block's map; extract-features max-pools it).

        Shape:
            (B, 3, T, H, W) -> (B, D, T1, H1, W1)
        """
        return self.video_trunk(video)

    def pool_video_map(
        self,
        fmap: torch.Tensor,
        time_offset: torch.Tensor | None = None,
        tokens: int | None = None,
    ) -> torch.Tensor:
        """Pooled video features (before the head; finetuning classifies these).

        A temporal crop passes ``time_offset``, its first time step in the full map (the "ours"
        transformer keeps absolute position embeddings), and ``tokens``, the full map's T1 (the
        official transformer resamples the crop to that many tokens); ``None``: a full map.

        Shape:
            fmap (N, D, t, h, w), time_offset (N,) long or None -> (N, D)
        """
        return self.video_pool(fmap, time_offset, tokens)

    def embed_video_map(
        self,
        fmap: torch.Tensor,
        time_offset: torch.Tensor | None = None,
        tokens: int | None = None,
    ) -> torch.Tensor:
        """Pool + head: a (cropped) map to L2-normalised embeddings (arguments as
        :meth:`pool_video_map`).

        Shape:
            fmap (N, D, t, h, w), time_offset (N,) or None -> (N, E)
        """
        return self.video_head(self.video_pool(fmap, time_offset, tokens))

    def embed_video_tokens(
        self, token_sets: list[TokenSet], tokens: int | None = None
    ) -> list[torch.Tensor]:
        """Pool several sets of spatially averaged maps (:func:`~stica.models.pooling.spatial_tokens`)
        at once, one transformer call where their token counts match, and project each set with its
        own head call, so each set has its own BatchNorm statistics (``tokens`` as
        :meth:`pool_video_map`).

        Shape:
            [(tokens (N_i, t_i, D), time_offset (N_i,) or None)] -> [(N_i, E)]
        """
        pooled = self.video_pool.pool_tokens(token_sets, tokens)
        return [self.video_head(z) for z in pooled]

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, T, H, W) -> (B, D)"""
        return self.pool_video_map(self.video_map(video))

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 3, T, H, W) -> (B, E), rows of unit norm"""
        return self.embed_video_map(self.video_map(video))

    # ---- audio -------------------------------------------------------------------------------

    def audio_map(self, spec: torch.Tensor) -> torch.Tensor:
        """Last conv activations of the audio trunk (audio-eval max-pools them).

        Shape:
            (B, 1, n_mels, frames) -> (B, Da, F', T')
        """
        return self.audio_trunk.feature_map(spec)

    def audio_features(self, spec: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 1, n_mels, frames) -> (B, Da)   (global average pool; paper: audio always avg)"""
        return self.audio_map(spec).mean(dim=(2, 3))

    def embed_audio(self, spec: torch.Tensor) -> torch.Tensor:
        """Shape: (B, 1, n_mels, frames) -> (B, E), rows of unit norm"""
        return self.audio_head(self.audio_features(spec))

    # ---- one training step -------------------------------------------------------------------

    def forward(
        self,
        videos: Sequence[torch.Tensor] = (),
        spec: torch.Tensor | None = None,
        crops: FeatureCropConfig | None = None,
        generator: torch.Generator | None = None,
        crop_views: int | None = None,
    ) -> dict[str, Any]:
        """Embeddings of one training step.

        ``videos`` are RGB crops of the same B samples (e.g. L1, L2, and any multi-crop smalls);
        crops of equal shape share ONE trunk call. With ``crops``, feature crops are cut from the
        maps of the first ``crop_views`` videos (default: all; e.g. 2 for L1, L2 when small
        multi-crop videos follow), offsets drawn from ``generator``, one embedding call per crop
        shape.

        Returns:
            ``"video"``: list of (B, E), one per input video;
            ``"crops"`` (when ``crops``): list, one per cropped video, of
            ``{group name: (K, B, E)}`` (``"space_medium"``, ...; groups without crops absent);
            ``"audio"``: (B, E) when ``spec`` (B, 1, n_mels, frames) is given.
        """
        out: dict[str, Any] = {}
        if videos:
            if crops is not None and generator is None:
                raise ValueError("feature crops need an explicit torch.Generator")
            wanted = len(videos) if crop_views is None else crop_views
            n_crop = 0 if crops is None else min(len(videos), wanted)
            out["video"] = [None] * len(videos)
            if crops is not None:
                out["crops"] = [None] * n_crop
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, v in enumerate(videos):
                by_shape.setdefault(tuple(v.shape), []).append(i)
            for idx in by_shape.values():
                self._embed_same_shape(videos, idx, crops, generator, n_crop, out)
        if spec is not None:
            out["audio"] = self.embed_audio(spec)
        return out

    def _embed_same_shape(self, videos, idx, crops, generator, n_crop, out) -> None:
        """Trunk + embeddings for the videos ``idx`` (all of one shape): one trunk call, and one
        pooling call for their whole maps and every feature crop."""
        b = videos[idx[0]].shape[0]
        fmap = self.video_map(torch.cat([videos[i] for i in idx]))  # (V*B, D, T1, H1, W1)
        # the videos to crop come first in idx (videos before crop_views), so their samples are
        # the first rows of the map
        cropped = [j for j, i in enumerate(idx) if i < n_crop]
        groups = []
        if cropped:
            groups = sample_crops(crops, fmap.shape, len(cropped) * b, generator)
        t1 = fmap.shape[2]

        def embed(token_sets):
            return self.embed_video_tokens(token_sets, tokens=t1)

        z, views = embed_crops(embed, fmap, groups, full=True)  # (V*B, E), group -> (K, Vc*B, E)
        for j, i in enumerate(idx):
            out["video"][i] = z[j * b : (j + 1) * b]
        for c, j in enumerate(cropped):
            out["crops"][idx[j]] = {g: v[:, c * b : (c + 1) * b] for g, v in views.items()}


def build_model(config: ModelConfig | dict[str, Any]) -> SticaModel:
    """Rebuild a model from its config or ``dataclasses.asdict(config)`` (as checkpoints store it).

    Unknown keys or bad values raise :class:`~stica.config.ConfigError`.
    """
    if not isinstance(config, ModelConfig):
        config = from_dict(ModelConfig, dict(config), prefix="pretrain.model")
    return SticaModel(config)


def model_config_dict(model: SticaModel) -> dict[str, Any]:
    """The dict a checkpoint stores to rebuild ``model`` with :func:`build_model`."""
    return dataclasses.asdict(model.config)
