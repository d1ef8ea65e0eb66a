"""Handwritten digits (8x8, scikit-learn's bundled set) with a small PyTorch network, on the GPU when the
replica was given one and on the CPU otherwise, with server-side batching.

berth sets CUDA_VISIBLE_DEVICES for every replica from `compute.gpu` (empty without a GPU), so
`torch.cuda.is_available()` is true only in a replica placed on a GPU; `config.device` (auto, cpu, cuda)
overrides the choice. With `server_side_batching`, `predict` gets one payload per request, as a list,
and returns one answer per request: the batch is a single forward pass.
"""

from pathlib import Path

import torch
from starlette.responses import JSONResponse
from torch import nn

PIXELS = 64  # 8x8 grey levels, 0..16 as scikit-learn's digits have them


class DigitNet(nn.Module):
    """64 pixels -> 10 digit scores; built and trained by build_model.py, which saves its state_dict."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(PIXELS, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers(pixels / 16.0)


def pick_device(wanted: str = "auto") -> torch.device:
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


class PythonPredictor:
    def __init__(self, config):
        self.device = pick_device(config.get("device", "auto"))
        weights = Path(__file__).parent / config.get("model_path", "model.pt")
        self.model = DigitNet()
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.to(self.device).eval()
        with torch.inference_mode():  # a first pass now: CUDA's kernels load before ready, not on a request
            self.model(torch.zeros(1, PIXELS, device=self.device))
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            print(f"pytorch-classifier on {self.device} ({torch.cuda.get_device_name(index)})", flush=True)
        else:
            print(f"pytorch-classifier on cpu ({torch.get_num_threads()} threads)", flush=True)

    def predict(self, payload):
        """`payload` is the batch: one object per request, each {"image": [64 pixel values]}.

        Without server_side_batching in berth.yaml it is one such object, and so is the answer.
        """
        items = payload if isinstance(payload, list) else [payload]
        answers = [None] * len(items)
        rows, images = [], []
        for i, item in enumerate(items):
            image = item.get("image") if isinstance(item, dict) else None
            if (not isinstance(image, list) or len(image) != PIXELS
                    or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in image)):
                answers[i] = JSONResponse({"error": f'expected {{"image": [{PIXELS} numbers, 0 to 16]}}'},
                                          status_code=400)  # this request only: the rest of the batch goes on
                continue
            rows.append(i)
            images.append(image)
        if images:
            with torch.inference_mode():
                batch = torch.tensor(images, dtype=torch.float32, device=self.device)
                probabilities = torch.softmax(self.model(batch), dim=1)
                confidence, labels = probabilities.max(dim=1)
            for i, label, score in zip(rows, labels.tolist(), confidence.tolist(), strict=True):
                answers[i] = {"label": label, "confidence": round(score, 3), "device": self.device.type}
        return answers if isinstance(payload, list) else answers[0]
