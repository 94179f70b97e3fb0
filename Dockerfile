# ewc-atari on a CUDA GPU:
#   docker build -t ewc-atari .
#   docker run --gpus all -v "$PWD/runs:/app/runs" ewc-atari --games pong,breakout
# Lint: hadolint Dockerfile. tests/test_packaging.py replays the COPY and RUN steps without Docker.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first, in a layer cached until pyproject.toml changes: [project].dependencies read
# straight from pyproject.toml, so this step needs none of the code (torch comes with the base image).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt \
    && rm requirements.txt

# Then the code, and the packages that pyproject.toml finds installed over it. Editable: the
# packages stay in /app, next to configs/ and the .git that run.json takes the commit from.
COPY . .
RUN pip install --no-cache-dir --no-deps -e .

VOLUME ["/app/runs"]
ENTRYPOINT ["python", "train.py"]
CMD ["--games", "pong,breakout"]
