"""The registry's pyfunc flavour answers exactly as `distilqa predict`, at every precision.

A notebook or batch job that loads `models:/name@champion` must get the evaluated answers. bf16
results depend on how many threads split a GEMM, so the pyfunc has to use predict's thread layout.
"""

from __future__ import annotations

import json

import pytest

from distilqa.squad import load_squad
from tests.conftest import run_cli

WINDOW = {"max_seq_len": 256, "doc_stride": 64}


@pytest.fixture(scope="module")
def wide_roberta_dir(tmp_path_factory, bpe_tokenizer_dir):
    """Wide enough (256) that GEMMs are split over threads, as in a real model."""
    from distilqa.local_models import random_qa_model

    return random_qa_model(bpe_tokenizer_dir, tmp_path_factory.mktemp("wide-roberta"), num_layers=2, hidden_size=256)


@pytest.mark.parametrize("precision", ["bf16", "int8"])  # the batch-invariant paths: exact by design
def test_pyfunc_answers_as_predict(wide_roberta_dir, dev_slice_file, tmp_path, precision):
    import mlflow.pyfunc
    import pandas as pd
    import torch
    from distilqa.serving.pyfunc import ExtractiveQAModel

    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"window": WINDOW, "precision": precision}))
    context = mlflow.pyfunc.PythonModelContext({"model": str(wide_roberta_dir), "settings": str(settings)}, None)
    examples = load_squad(dev_slice_file).examples()
    threads = torch.get_num_threads()
    try:
        model = ExtractiveQAModel()
        model.load_context(context)
        out = model.predict(context, pd.DataFrame([{"question": e.question, "context": e.context} for e in examples]))
    finally:
        torch.set_num_threads(threads)  # the pyfunc sets the process's threads, as `predict` does
    pred = tmp_path / "pred.json"
    args = ["--max-seq-len", str(WINDOW["max_seq_len"]), "--doc-stride", str(WINDOW["doc_stride"])]
    result = run_cli(
        "predict", str(wide_roberta_dir), str(dev_slice_file), "-o", str(pred), "--precision", precision, *args
    )
    assert result.returncode == 0, result.stderr[-2000:]
    expected = json.loads(pred.read_text())
    assert len(examples) > 40
    assert list(out["answer"]) == [expected[e.id] for e in examples]
