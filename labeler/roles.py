"""Who may do what: volunteer (anyone), project scientist (their projects only), admin.

Admins are Django staff. A project scientist holds a ``ProjectMembership`` with the
scientist role. Everyone else, signed in or anonymous, is a volunteer: they classify,
see their own progress and nothing about a subject beyond its pixels and metadata.
"""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission

from labeler.subjects.models import Project, ProjectMembership


def is_admin(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def scientist_project_ids(user) -> set[int] | None:
    """Projects the user may review and export; None means every project (admin)."""
    if is_admin(user):
        return None
    if not (user and user.is_authenticated and user.is_active):
        return set()
    return set(
        ProjectMembership.objects.filter(user=user, role=ProjectMembership.Role.SCIENTIST).values_list(
            "project_id", flat=True
        )
    )


def is_scientist_of(user, project: Project | int) -> bool:
    project_id = project if isinstance(project, int) else project.pk
    allowed = scientist_project_ids(user)
    return allowed is None or project_id in allowed


def is_any_scientist(user) -> bool:
    allowed = scientist_project_ids(user)
    return allowed is None or bool(allowed)


class IsAdmin(BasePermission):
    message = "Only admins may do this."

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user)


class IsScientist(BasePermission):
    """Request level: a scientist of some project (views then check the object's project)."""

    message = "Only project scientists and admins may do this."

    def has_permission(self, request, view) -> bool:
        return is_any_scientist(request.user)


def require_scientist_of(user, project: Project | int) -> None:
    """Raise PermissionDenied (a 403 in views and the API) unless the user may review the project."""
    if not is_scientist_of(user, project):
        raise PermissionDenied("Only this project's scientists and admins may do this.")


def scientist_required(view):
    """Page decorator: the login page for anonymous visitors, 403 for volunteers."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_any_scientist(request.user):
            raise PermissionDenied("Only project scientists and admins may see this page.")
        return view(request, *args, **kwargs)

    return wrapper
