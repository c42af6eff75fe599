# MLflow's server with the PostgreSQL driver, at the versions pinned in requirements.lock.
FROM python:3.11-slim
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir -c /tmp/requirements.lock mlflow "psycopg[binary]"
EXPOSE 5000
