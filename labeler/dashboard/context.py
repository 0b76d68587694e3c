"""Template context: whether the nav shows the Science link."""

from labeler.roles import is_any_scientist


def can_review(request) -> dict:
    # A callable: templates call it only where the nav asks, so pages that never show the
    # link pay no membership query; admins and anonymous visitors never need one.
    user = getattr(request, "user", None)
    return {"can_review": lambda: is_any_scientist(user)}
