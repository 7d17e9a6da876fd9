FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lockmanager lockmanager
COPY backend backend
COPY etl etl
RUN pip install --no-cache-dir .
ENV FLUXION_DB=/data/fluxion.duckdb
VOLUME ["/data"]
EXPOSE 8000
CMD ["fluxion", "serve", "--host", "0.0.0.0", "--port", "8000"]
