"""Sign up, log in and out (Django's auth views); the anonymous work of this browser comes along.

An anonymous volunteer is ``a:<uuid>`` in their session (labeler/api/volunteers.py). On
sign-up or log-in that work moves to the account (services_volunteers.py), and the
session forgets the anonymous key: after logging out, the browser starts afresh.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods

from labeler.api.volunteers import SESSION_KEY
from labeler.classifications.services_volunteers import volunteer_adopt_anonymous


def adopt_anonymous_work(request, user) -> None:
    """Move this session's anonymous classifications to ``user`` (call right after ``login``)."""
    anonymous = request.session.pop(SESSION_KEY, None)
    if anonymous:
        volunteer_adopt_anonymous(anonymous_key=f"a:{anonymous}", user=user)


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("me")
    form = UserCreationForm(request.POST or None)  # passwords: settings.AUTH_PASSWORD_VALIDATORS
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=settings.AUTHENTICATION_BACKENDS[0])
        adopt_anonymous_work(request, user)
        return redirect("me")
    return render(request, "registration/signup.html", {"form": form})


class SkyloopLoginView(LoginView):
    next_page = reverse_lazy("me")
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)  # logs in; the session keeps its data
        adopt_anonymous_work(self.request, form.get_user())
        return response


class SkyloopLogoutView(LogoutView):
    next_page = reverse_lazy("home")
