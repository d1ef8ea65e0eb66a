class PythonPredictor:
    def __init__(self, config):
        self.greeting = config.get("greeting", "hello")

    def predict(self, payload):
        return {"greeting": self.greeting, "echo": payload}
