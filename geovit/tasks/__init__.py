"""Task heads, losses and metrics built on geovit backbones."""
