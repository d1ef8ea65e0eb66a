"""Counts the words of a text and shouts it back: a text/plain API."""


class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        if not isinstance(payload, str):
            from starlette.responses import PlainTextResponse

            return PlainTextResponse("send Content-Type: text/plain\n", status_code=415)
        words = payload.split()
        return f"{len(words)} words: {payload.strip().upper()}"
