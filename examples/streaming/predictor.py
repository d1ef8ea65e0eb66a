"""A toy token generator: streams one word at a time, with a delay per token, as a language model would."""

import time
from pathlib import Path


class PythonPredictor:
    def __init__(self, config):
        self.tokens = int(config.get("tokens", 20))
        self.delay = float(config.get("delay", 0.05))
        # Optional: a folder where each generation leaves a note saying how it ended (for tests).
        self.done_dir = config.get("done_dir")

    def predict(self, payload, query_params, headers):
        payload = payload if isinstance(payload, dict) else {}
        words = str(payload.get("prompt", "")).split() or ["token"]
        count = int(payload.get("tokens", self.tokens))
        fail_after = query_params.get("fail_after")
        request_id = headers.get("x-request-id", "")
        # Returning a generator streams its items as they are yielded (see docs/streaming.md).
        return self.generate(words, count, None if fail_after is None else int(fail_after), request_id)

    def generate(self, words, count, fail_after, request_id):
        ended = "closed"  # the client left: berth closed the generator, so this `finally` still runs
        try:
            for index in range(count):
                if index == fail_after:
                    raise RuntimeError(f"the model failed after {index} tokens")
                time.sleep(self.delay)  # the model's work for one token (berth runs it off the event loop)
                yield words[index % len(words)] + " "
            ended = "complete"
        except RuntimeError:
            ended = "failed"
            raise
        finally:
            if self.done_dir and request_id.isalnum():
                Path(self.done_dir, request_id).write_text(ended)
