"""causal: multi-scale ViT embeddings → causal forests → CATE, evaluated with RATE."""
