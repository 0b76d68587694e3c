"""Anonymous volunteers who sign up or log in keep what they did; the personal page /me/."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from labeler.classifications.models import Classification, VolunteerSkill
from labeler.classifications.services import classification_submit
from labeler.classifications.services_volunteers import volunteer_adopt_anonymous

YES = [{"task": "T0", "answer": 0}]
PASSWORD = "orbital-resonance-42"


def submit(client, workflow, subject_id, annotation=YES, **extra):
    body = {"workflow": workflow.id, "subject": subject_id, "client_uuid": str(uuid.uuid4()), "annotation": annotation}
    response = client.post(reverse("api-classifications"), {**body, **extra}, content_type="application/json")
    assert response.status_code == 201, response.json()


def subject_ids(workflow, n):
    return list(workflow.states.order_by("subject_id").values_list("subject_id", flat=True)[:n])


def anonymous_key_of(client) -> str:
    return Classification.objects.filter(volunteer_key__startswith="a:").values_list("volunteer_key", flat=True)[0]


def test_signing_up_moves_this_browsers_classifications_to_the_new_account(client, spectrum_workflow):
    for sid in subject_ids(spectrum_workflow, 3):
        submit(client, spectrum_workflow, sid)
    submit(Client(), spectrum_workflow, subject_ids(spectrum_workflow, 1)[0])  # another browser: not moved
    response = client.post(reverse("signup"), {"username": "vera", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("me")
    user = get_user_model().objects.get(username="vera")
    mine = Classification.objects.filter(volunteer_key=f"u:{user.pk}")
    assert mine.count() == 3 and all(c.user_id == user.pk for c in mine)
    assert Classification.objects.filter(volunteer_key__startswith="a:").count() == 1
    progress = client.get(reverse("api-progress", args=[spectrum_workflow.id])).json()
    assert progress["classified"] == 3


def test_logging_in_keeps_anonymous_work_but_not_what_the_account_already_classified(client, spectrum_workflow):
    user = get_user_model().objects.create_user("ada", password=PASSWORD)
    first, second = subject_ids(spectrum_workflow, 2)
    classification_submit(
        workflow=spectrum_workflow,
        subject_id=first,
        volunteer_key=f"u:{user.pk}",
        annotation=YES,
        client_uuid=uuid.uuid4(),
        user=user,
    )
    submit(client, spectrum_workflow, first)
    submit(client, spectrum_workflow, second)
    anonymous = anonymous_key_of(client)
    response = client.post(reverse("login"), {"username": "ada", "password": PASSWORD})
    assert response.status_code == 302
    account = Classification.objects.filter(volunteer_key=f"u:{user.pk}")
    assert sorted(account.values_list("subject_id", flat=True)) == [first, second]
    kept = Classification.objects.get(volunteer_key=anonymous)  # the collision stays apart
    assert kept.subject_id == first
    assert client.get(reverse("api-progress", args=[spectrum_workflow.id])).json()["classified"] == 2


def test_after_logging_out_the_browser_is_a_new_anonymous_volunteer(client, spectrum_workflow):
    get_user_model().objects.create_user("lin", password=PASSWORD)
    client.post(reverse("login"), {"username": "lin", "password": PASSWORD})
    submit(client, spectrum_workflow, subject_ids(spectrum_workflow, 1)[0])
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("api-progress", args=[spectrum_workflow.id])).json()["classified"] == 0


def test_skill_evidence_follows_and_sums_with_the_accounts(spectrum_workflow):
    user = get_user_model().objects.create_user("kim", password=PASSWORD)
    VolunteerSkill.objects.create(
        workflow=spectrum_workflow, volunteer_key="a:abc", task="T0", counts=[[2, 1], [0, 3]], n_gold=2
    )
    VolunteerSkill.objects.create(
        workflow=spectrum_workflow, volunteer_key=f"u:{user.pk}", task="T0", counts=[[1, 0], [1, 1]], n_gold=1
    )
    result = volunteer_adopt_anonymous(anonymous_key="a:abc", user=user)
    assert result.skills_merged == 1
    merged = VolunteerSkill.objects.get()
    assert merged.volunteer_key == f"u:{user.pk}" and merged.counts == [[3, 1], [1, 4]] and merged.n_gold == 3
    assert volunteer_adopt_anonymous(anonymous_key="a:abc", user=user).moved == 0  # idempotent


def test_only_anonymous_keys_can_be_adopted(spectrum_workflow):
    user = get_user_model().objects.create_user("eve", password=PASSWORD)
    with pytest.raises(ValueError):
        volunteer_adopt_anonymous(anonymous_key="u:1", user=user)


def test_sign_up_refuses_a_trivial_password_and_creates_nobody(client, small_sky):
    response = client.post(reverse("signup"), {"username": "bob", "password1": "1234", "password2": "1234"})
    assert response.status_code == 200 and "password" in response.content.decode().lower()
    assert not get_user_model().objects.exists()


# ---------------------------------------------------------------- the personal page


def test_my_page_shows_my_counts_favourites_and_recent_work_only(client, spectrum_workflow, image_workflow):
    first, second = subject_ids(spectrum_workflow, 2)
    submit(client, spectrum_workflow, first, favourite=True, comment="a lovely trough")
    submit(client, spectrum_workflow, second)
    submit(
        Client(),
        image_workflow,
        subject_ids(image_workflow, 1)[0],
        [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}],
    )
    page = client.get(reverse("me")).content.decode()
    assert "Damped Lyman-alpha hunt" in page and "Galaxy morphology" not in page
    assert 'class="classified">2<' in page
    assert "a lovely trough" in page and "Sign up" in page
    assert page.count("data-client-uuid=") == 2


def test_my_page_scores_gold_subjects(client, spectrum_workflow):
    from labeler.workflows.models import SubjectState

    right, wrong = subject_ids(spectrum_workflow, 2)
    SubjectState.objects.filter(workflow=spectrum_workflow, subject_id__in=[right, wrong]).update(
        gold_answers={"T0": 0}
    )
    submit(client, spectrum_workflow, right, YES)
    submit(client, spectrum_workflow, wrong, [{"task": "T0", "answer": 1}])
    page = client.get(reverse("me")).content.decode()
    assert 'class="gold-seen">2<' in page and 'class="gold-right">1<' in page


def test_a_new_visitor_sees_an_empty_page_with_a_way_in(client, small_sky):
    page = client.get(reverse("me")).content.decode()
    assert "Nothing yet" in page and reverse("signup") in page


def test_the_account_pages_offer_their_forms_and_the_nav_follows_the_login(client, small_sky):
    signup = client.get(reverse("signup")).content.decode()
    assert 'name="username"' in signup and 'name="password1"' in signup and "csrfmiddlewaretoken" in signup
    assert 'name="password"' in client.get(reverse("login")).content.decode()
    get_user_model().objects.create_user("noor", password=PASSWORD)
    client.post(reverse("login"), {"username": "noor", "password": PASSWORD})
    home = client.get(reverse("home")).content.decode()
    assert "Log out noor" in home and reverse("signup") not in home
    assert client.get(reverse("login"))["Location"] == reverse("me")
