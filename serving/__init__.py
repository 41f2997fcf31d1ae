"""The KServe predictor (imported as `distilqa.serving`); built in the serving issue on `distilqa.inference`."""
