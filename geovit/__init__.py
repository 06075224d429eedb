"""geovit: channel-adaptive vision transformers for scientific and remote-sensing imaging."""
from geovit.errors import CheckpointError, DataError, GeovitError

__version__ = "0.1.0"

__all__ = ["GeovitError", "DataError", "CheckpointError", "__version__"]

# Register geovit's model variants with timm (timm.create_model("channelvit_small_patch8")): timm has
# no plugin entry point, so its registry knows only the models whose modules were imported.
from geovit import models as _models  # noqa: E402,F401
