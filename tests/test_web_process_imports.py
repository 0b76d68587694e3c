"""The web process serves volunteers: it must not pay torch's second of start-up and ~1 GB per worker."""

import subprocess
import sys

CHECK = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeler.settings")
import django
django.setup()
import labeler.urls, labeler.api.views, labeler.web.views
import labeler.learning.triggers, labeler.learning.tasks  # what a submit uses to send a training
from django.urls import resolve
resolve("/")
print("torch" in sys.modules)
"""


def test_the_web_process_never_imports_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
