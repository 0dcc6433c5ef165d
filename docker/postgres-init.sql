-- Second database on the same server: MLflow's backend store lives apart from kwx's market data.
CREATE DATABASE mlflow;
