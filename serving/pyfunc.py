"""The registered model's MLflow pyfunc flavour: the serving code, not a second implementation.

`mlflow.pyfunc.load_model("models:/tinyroberta-squad2@champion").predict(df)` answers exactly as
`distilqa predict` and `distilqa serve` do (same QAModel, windows and decoding), so a model pulled
from the registry by a notebook or a batch job gives the evaluated answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

if TYPE_CHECKING:
    from mlflow.models import ModelSignature


def signature() -> ModelSignature:
    """The columns a caller sends and gets back, shown in the MLflow UI and checked by MLflow on predict."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "question"), ColSpec("string", "context")]),
        outputs=Schema([ColSpec("string", "answer"), ColSpec("double", "no_answer_probability")]),
    )


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

    # a DataFrame hint keeps MLflow from inferring its own input validation from the hint (it only can from
    # list[...]); the logged model's explicit signature() is what MLflow checks a caller's columns against
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from distilqa.squad import Example

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        examples = [Example(str(i), str(r["question"]), str(r["context"])) for i, r in enumerate(rows)]
        answers = self.model.answer(examples, self.window, self.decode, self.batch)
        return pd.DataFrame(
            {"answer": [a.text for a in answers], "no_answer_probability": [a.na_prob for a in answers]}
        )
