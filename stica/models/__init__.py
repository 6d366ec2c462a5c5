"""STiCA encoders: video trunks, audio trunk, pooling, heads and the full model."""

from stica.models.stica import SticaModel, build_model, model_config_dict

__all__ = ["SticaModel", "build_model", "model_config_dict"]
