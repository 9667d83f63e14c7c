# One image for every Rapport service: `docker run rapport <subcommand>` (see `rapport --help`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 rapport
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER rapport
WORKDIR /home/rapport
ENV RAPPORT_HOST=0.0.0.0 RAPPORT_VAR_DIR=/home/rapport/var PYTHONUNBUFFERED=1
ENTRYPOINT ["rapport"]
CMD ["--help"]
