"""Sign up, log in and out (Django's auth views); the anonymous work of this browser comes along.

An anonymous volunteer is ``a:<uuid>`` in their session (labeler/api/volunteers.py). On
sign-up or log-in that work moves to the account (services_volunteers.py), and the
session forgets the anonymous key: after logging out, the browser starts afresh.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login, password_validation
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView, LogoutView
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods

from labeler.api.volunteers import SESSION_KEY
from labeler.classifications.services_volunteers import volunteer_adopt_anonymous

# Used while settings.AUTH_PASSWORD_VALIDATORS is empty, so that accounts never get trivial passwords.
FALLBACK_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


def password_validators() -> list:
    return password_validation.get_password_validators(
        settings.AUTH_PASSWORD_VALIDATORS or FALLBACK_PASSWORD_VALIDATORS
    )


class SignupForm(UserCreationForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = password_validation.password_validators_help_text_html(
            password_validators()
        )

    def validate_password_for_user(self, user, password_field_name="password2"):
        password = self.cleaned_data.get(password_field_name)
        if password:
            try:
                password_validation.validate_password(password, user, password_validators())
            except ValidationError as error:
                self.add_error(password_field_name, error)


def adopt_anonymous_work(request, user) -> None:
    """Move this session's anonymous classifications to ``user`` (call right after ``login``)."""
    anonymous = request.session.pop(SESSION_KEY, None)
    if anonymous:
        volunteer_adopt_anonymous(anonymous_key=f"a:{anonymous}", user=user)


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("me")
    form = SignupForm(request.POST or None)
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
