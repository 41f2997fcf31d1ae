"""The @dsl.pipeline DAG and its profiles (imported as `distilqa.pipelines`); built in the pipeline issue."""
