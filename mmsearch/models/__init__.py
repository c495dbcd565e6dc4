"""Model families, one folder each: config, checkpoint loader and preprocessing side by side."""

import threading

MODEL_BUILD_LOCK = threading.RLock()
"""Held while any model's modules are constructed. Phi-3 Vision builds its 4 B parameters
without storage by briefly patching ``nn.Module.register_parameter`` for the whole
process; a model built in another thread at that moment (the server loads the embedder
and the reranker lazily, possibly at once) would get storage-less parameters too."""
