"""Walk-forward training: window plan, hyperparameter search, model pipeline, MLflow runner."""
