"""Iris species from flower measurements, with a model trained at start-up from scikit-learn's bundled data.

Training takes a few milliseconds, so the example needs no model file and no download.
"""

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class PythonPredictor:
    def __init__(self, config):
        iris = load_iris()
        self.labels = [str(name) for name in iris.target_names]
        self.model = LogisticRegression(max_iter=config.get("max_iter", 1000))
        self.model.fit(iris.data, iris.target)

    def predict(self, payload):
        rows = payload if isinstance(payload, list) else [payload]
        try:
            measurements = [[float(row[name]) for name in FEATURES] for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            from starlette.responses import JSONResponse

            return JSONResponse({"error": f"expected an object with {', '.join(FEATURES)} ({exc})"},
                                status_code=400)
        labels = [self.labels[i] for i in self.model.predict(measurements)]
        return labels if isinstance(payload, list) else labels[0]
