"""Pure domain logic: no database, HTTP, MLflow, CLI or wall clock in here."""
