class PythonPredictor:
    def __init__(self, config):
        self.config = config

    def predict(self, payload):
        return {"echo": payload}
