"""The MLflow model registry: register window versions, gate and promote them, resolve one by date.

- ``versions``: registering and listing versions (MLflow IO)
- ``resolution``: the pure rule "which window trades this date"
- ``cache``: ``load_model_for_date`` / ``load_model_for_now`` with a cached version table and models
- ``promotion``: acceptance gates and the stage transition
"""

from kwx.registry.versions import WINDOW_TAGS, model_name

__all__ = ["WINDOW_TAGS", "model_name"]
