"""ViT Desktop: classify images with Vision Transformers and see where they looked."""

__version__ = "0.1.0"
