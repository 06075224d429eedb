"""geovit: channel-adaptive vision transformers for scientific and remote-sensing imaging."""
from geovit.errors import CheckpointError, DataError, GeovitError

__version__ = "0.1.0"

__all__ = ["GeovitError", "DataError", "CheckpointError", "__version__"]
