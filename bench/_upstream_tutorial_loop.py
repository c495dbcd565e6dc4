"""The tutorial's indexing loop on the upstream Visualized BGE code, timed.

Runs in the Python environment that has the upstream code's dependencies (FlagEmbedding's
``research/visual_bge`` needs transformers < 4.49), not in ours; ``index_throughput.py
--upstream-src DIR --upstream-python PYTHON`` starts it once per round. Prints one JSON
line: the seconds the loop took (model loading excluded) and how many images it encoded.

    python _upstream_tutorial_loop.py SRC BGE_DIR WEIGHTS IMAGE_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    src, bge_dir, weights, image_dir = sys.argv[1:5]
    sys.path.insert(0, src)
    import torch
    from visual_bge.modeling import Visualized_BGE

    model = Visualized_BGE(model_name_bge=bge_dir, model_weight=weights)
    model.eval()
    paths = sorted(str(p) for p in Path(image_dir).iterdir() if p.is_file())
    with torch.no_grad():  # warm-up, as our pipelines get
        model.encode(image=paths[0])
    vectors = {}
    start = time.perf_counter()
    for path in paths:  # the tutorial's loop: one image per encode call
        with torch.no_grad():
            vectors[path] = model.encode(image=path).tolist()[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "images": len(vectors)}))


if __name__ == "__main__":
    main()
