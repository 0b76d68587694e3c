# The one image of every Skyloop process (web, workers, beat): see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=labeler.settings \
    SKYLOOP_VAR_DIR=/data
WORKDIR /app

# Dependencies first, so a code change does not reinstall them (torch is a few GB).
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-nodeps.txt

COPY . .
RUN useradd --create-home --uid 1000 skyloop && mkdir -p /data && chown skyloop /data
USER skyloop
VOLUME /data
EXPOSE 8000
CMD ["gunicorn", "labeler.wsgi", "-c", "scripts/gunicorn_conf.py"]
