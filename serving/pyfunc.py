"""The registered model's MLflow pyfunc flavour: the serving code, not a second implementation.

`mlflow.pyfunc.load_model("models:/tinyroberta-squad2@champion").predict(df)` answers exactly as
`distilqa predict` and `distilqa serve` do (same QAModel, windows and decoding), so a model pulled
from the registry by a notebook or a batch job gives the evaluated answers.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc


class ExtractiveQAModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame (or list of dicts) with `question` and `context`; output: answers + no-answer probability."""

    def load_context(self, context: Any) -> None:
        import json
        from pathlib import Path

        from distilqa.decode import DecodeConfig
        from distilqa.inference import QAModel, parallel_batch
        from distilqa.windows import WindowConfig

        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        self.window = WindowConfig(**settings["window"])
        self.decode = DecodeConfig()
        self.model = QAModel.load(context.artifacts["model"], settings.get("precision", "fp32"))
        self.batch = parallel_batch()

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        from distilqa.squad import Example

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        examples = [Example(str(i), str(r["question"]), str(r["context"])) for i, r in enumerate(rows)]
        answers = self.model.answer(examples, self.window, self.decode, self.batch)
        return pd.DataFrame({"answer": [a.text for a in answers], "no_answer_probability": [a.na_prob for a in answers]})
