"""Who is classifying: an account or an anonymous browser session."""

import uuid

SESSION_KEY = "skyloop_volunteer"


def volunteer_key_for(request) -> str:
    if request.user.is_authenticated:
        return f"u:{request.user.pk}"
    anonymous = request.session.get(SESSION_KEY)
    if not anonymous:
        anonymous = uuid.uuid4().hex
        request.session[SESSION_KEY] = anonymous
    return f"a:{anonymous}"
