# One image for the kwx CLI, the real-time loop and the MLflow tracking server (all need mlflow, psycopg2, boto3).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini MLproject conda.yaml python_env.yaml ./
COPY kwx ./kwx
COPY alembic ./alembic
COPY configs ./configs
RUN pip install --no-cache-dir -e . \
    && useradd --create-home --uid 10001 kwx \
    && chown kwx /app \
    && mkdir /state && chown kwx /state
# Not root; the code stays root-owned, /app itself is writable for what commands write there (acceptance_reports/).
# /state holds `kwx schedule`'s state file; a new named volume mounted there copies its ownership.
USER kwx
ENTRYPOINT ["kwx"]
CMD ["--help"]
