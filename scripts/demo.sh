#!/usr/bin/env bash
# make demo: migrate, simulate the demo sky once, start a Celery worker and the web server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
HOST=${SKYLOOP_DEMO_HOST:-127.0.0.1}
PORT=${SKYLOOP_DEMO_PORT:-8000}

$PY manage.py migrate --no-input
if ! $PY manage.py shell -c "from labeler.subjects.models import Project; raise SystemExit(0 if Project.objects.filter(slug='demo').exists() else 1)"; then
  $PY manage.py simulate_sky
fi

mkdir -p var/log
$PY -m celery -A labeler worker -Q gpu,default --pool solo --beat --loglevel INFO \
  --without-mingle --without-gossip >var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null || true; wait $WORKER 2>/dev/null || true' EXIT INT TERM

cat <<MSG

  Skyloop is running:  http://$HOST:$PORT/
  API docs:            http://$HOST:$PORT/api/docs/
  Celery worker log:   var/log/worker.log

  Let simulated volunteers drive the loop (another terminal):
    .venv/bin/python manage.py simulate_volunteers demo/galaxy-morphology --volunteers 40 --classifications 600

MSG
$PY manage.py runserver "$HOST:$PORT" --noreload
