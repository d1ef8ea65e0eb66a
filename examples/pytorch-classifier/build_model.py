"""Build model.pt: the DigitNet of predictor.py trained on scikit-learn's bundled 8x8 digits (no download).

    pip install torch scikit-learn && python examples/pytorch-classifier/build_model.py

Writes model.pt (the state_dict, about 10 KB) and sample.json (the first held-out digit, the same as
examples/onnx-classifier's) next to this file, and prints the held-out accuracy and the sample's answer.
Training is seeded and runs on the CPU, so the weights are the same on every run of one torch version.
"""

import json
from pathlib import Path

import torch
from predictor import DigitNet
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).parent

torch.manual_seed(0)
digits = load_digits()
train_x, test_x, train_y, test_y = train_test_split(digits.data, digits.target, test_size=0.2, random_state=0)
x, y = torch.tensor(train_x, dtype=torch.float32), torch.tensor(train_y)
model = DigitNet()
optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(300):  # full batch: 1437 images
    optimiser.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimiser.step()
model.eval()
with torch.inference_mode():
    predicted = model(torch.tensor(test_x, dtype=torch.float32)).argmax(dim=1)
accuracy = (predicted == torch.tensor(test_y)).float().mean().item()
torch.save(model.state_dict(), HERE / "model.pt")
(HERE / "sample.json").write_text(json.dumps({"image": [int(v) for v in test_x[0]]}) + "\n")
print(f"held-out accuracy {accuracy:.3f}; sample.json is a {int(test_y[0])}, predicted {int(predicted[0])}")
