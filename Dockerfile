# One image for the kwx CLI and the MLflow tracking server (both need mlflow, psycopg2 and boto3).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini MLproject conda.yaml python_env.yaml ./
COPY kwx ./kwx
COPY alembic ./alembic
COPY configs ./configs
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["kwx"]
CMD ["--help"]
