"""mmsearch: multimodal semantic search over images.

Index images with Visualized BGE, store them in Milvus, find them by text, by an
example image or by both, and rerank the hits with a vision-language model.
"""

__version__ = "0.1.0"
