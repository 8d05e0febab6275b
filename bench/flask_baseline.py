"""The classic tutorial server, for comparison: one global eager model, one image per request, Flask threads.

Same weights and the same preprocessing as resnet-api, nothing else: no batching, no thread tuning.
Run: python bench/flask_baseline.py WEIGHTS_FILE PORT
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import torch
from flask import Flask, jsonify, request
from PIL import Image

from resnet_api.inference.catalog import load_labels
from resnet_api.inference.model import build_model, load_state_dict_file
from resnet_api.inference.preprocess import to_array

app = Flask(__name__)
model = build_model(load_state_dict_file(Path(sys.argv[1])))
labels = load_labels()


@app.get("/readyz")
def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/predict")
def predict() -> object:
    image = Image.open(io.BytesIO(request.files["file"].read())).convert("RGB")
    batch = torch.from_numpy(to_array(image)).unsqueeze(0)
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=1)[0]
    scores, indices = probs.topk(3)
    return jsonify(
        predictions=[
            {"index": int(i), "label": labels[int(i)], "score": float(s)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]
    )


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
