# ewc-atari on a CUDA GPU:
#   docker build -t ewc-atari .
#   docker run --gpus all -v "$PWD/runs:/app/runs" ewc-atari --games pong,breakout
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (cached while only the code changes); torch comes with the base image.
COPY pyproject.toml README.md ./
COPY agents/__init__.py agents/__init__.py
COPY envs/__init__.py envs/__init__.py
RUN touch config.py train.py evaluate.py \
    && pip install --no-cache-dir -e . \
    && rm config.py train.py evaluate.py

COPY . .

VOLUME ["/app/runs"]
ENTRYPOINT ["python", "train.py"]
CMD ["--games", "pong,breakout"]
