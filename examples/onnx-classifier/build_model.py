"""Build model.onnx: a logistic regression on scikit-learn's bundled 8x8 digits, exported with skl2onnx.

    pip install scikit-learn skl2onnx && python examples/onnx-classifier/build_model.py

Writes model.onnx and sample.json (the first held-out digit) next to this file, and prints the
held-out accuracy and the sample's expected label.
"""

import json
from pathlib import Path

from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

HERE = Path(__file__).parent

digits = load_digits()
train_x, test_x, train_y, test_y = train_test_split(digits.data, digits.target, test_size=0.2, random_state=0)
model = LogisticRegression(max_iter=2000).fit(train_x, train_y)
onnx_model = convert_sklearn(model, initial_types=[("input", FloatTensorType([None, 64]))],
                             options={id(model): {"zipmap": False}}, target_opset=17)
(HERE / "model.onnx").write_bytes(onnx_model.SerializeToString())
(HERE / "sample.json").write_text(json.dumps({"input": [test_x[0].tolist()]}) + "\n")
print(f"held-out accuracy {model.score(test_x, test_y):.3f}; sample.json is a {int(test_y[0])}, "
      f"predicted {int(model.predict(test_x[:1])[0])}")
