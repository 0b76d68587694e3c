import uuid

import pytest

from labeler.classifications.models import Classification, Consensus
from labeler.classifications.selectors import TOP_FEW, subject_next_for
from labeler.classifications.services import ClassificationError, classification_submit
from labeler.workflows.models import SubjectState


def smooth_round_answer():
    return [{"task": "T0", "answer": 0}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 1}]


def submit(workflow, subject, key, annotation=None, client_uuid=None):
    return classification_submit(
        workflow=workflow,
        subject_id=subject.id,
        volunteer_key=key,
        annotation=smooth_round_answer() if annotation is None else annotation,
        client_uuid=client_uuid or uuid.uuid4(),
    )


def test_it_counts_votes_per_question_and_updates_fractions(image_workflow):
    subject = image_workflow.states.first().subject
    submit(image_workflow, subject, "a:1")
    submit(image_workflow, subject, "a:2", [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}])
    consensus = Consensus.objects.get(workflow=image_workflow, subject=subject)
    assert consensus.n_classifications == 2
    assert consensus.counts["T0"] == [1, 0, 1]
    assert consensus.fractions["T0"] == [0.5, 0.0, 0.5]
    assert consensus.counts["T3"] == [1, 0]


def test_it_is_idempotent_for_the_same_client_uuid(image_workflow):
    subject = image_workflow.states.first().subject
    same = uuid.uuid4()
    first = submit(image_workflow, subject, "a:1", client_uuid=same)
    again = submit(image_workflow, subject, "a:1", client_uuid=same)
    assert first.created and not again.created
    assert again.classification.pk == first.classification.pk
    assert Classification.objects.count() == 1
    assert Consensus.objects.get(subject=subject).n_classifications == 1


def test_it_refuses_a_second_classification_by_the_same_volunteer(image_workflow):
    subject = image_workflow.states.first().subject
    submit(image_workflow, subject, "a:1")
    with pytest.raises(ClassificationError) as err:
        submit(image_workflow, subject, "a:1")
    assert err.value.code == "duplicate"


@pytest.mark.parametrize(
    "annotation",
    [
        [],
        [{"task": "T0", "answer": 0}],  # stops before the tree ends
        [{"task": "T0", "answer": 7}],
        [{"task": "T1", "answer": 0}],
        "smooth",
        [{"task": "T0", "answer": True}, {"task": "T1", "answer": 0}, {"task": "T4", "answer": 0}],
        [{"task": "T0", "answer": 2}, {"task": "T3", "answer": 0}, {"task": "T4", "answer": 0}],
    ],
)
def test_it_rejects_annotations_that_do_not_walk_the_tree(image_workflow, annotation):
    subject = image_workflow.states.first().subject
    with pytest.raises(ClassificationError) as err:
        submit(image_workflow, subject, "a:1", annotation)
    assert err.value.code == "bad_annotation"
    assert not Classification.objects.exists()


def test_it_retires_a_subject_after_the_workflow_count(image_workflow):
    subject = image_workflow.states.first().subject
    for i in range(image_workflow.retire_after):
        submit(image_workflow, subject, f"a:{i}")
    state = SubjectState.objects.get(workflow=image_workflow, subject=subject)
    assert state.status == SubjectState.Status.RETIRED
    assert state.retirement_reason == "classification_count"
    assert state.retired_at is not None


def test_it_never_serves_a_seen_or_retired_subject(image_workflow):
    served = set()
    for _ in range(image_workflow.states.count()):
        subject = subject_next_for(workflow=image_workflow, volunteer_key="a:me")
        assert subject is not None and subject.id not in served
        served.add(subject.id)
        submit(image_workflow, subject, "a:me")
    assert subject_next_for(workflow=image_workflow, volunteer_key="a:me") is None

    retired = SubjectState.objects.filter(workflow=image_workflow).first()
    retired.status = SubjectState.Status.RETIRED
    retired.save()
    for _ in range(30):
        assert subject_next_for(workflow=image_workflow, volunteer_key="a:other").id != retired.subject_id


def test_it_serves_the_highest_priorities_when_there_is_no_random_share(image_workflow):
    image_workflow.random_share = 0.0
    image_workflow.gold_share_start = 0.0  # no gold injection: only priorities decide
    image_workflow.retire_after = 100  # leases never fill a subject (the Redis selector's spreading is tested apart)
    image_workflow.save()
    states = list(SubjectState.objects.filter(workflow=image_workflow).order_by("id"))
    for i, state in enumerate(states):
        state.priority = float(i)
    SubjectState.objects.bulk_update(states, ["priority"])
    top = {s.subject_id for s in states[-TOP_FEW:]}
    for i in range(20):
        assert subject_next_for(workflow=image_workflow, volunteer_key=f"a:{i}").id in top


def test_it_rejects_a_subject_outside_the_workflow(image_workflow, spectrum_workflow):
    spectrum_subject = spectrum_workflow.states.first().subject
    with pytest.raises(ClassificationError) as err:
        submit(image_workflow, spectrum_subject, "a:1")
    assert err.value.code == "unknown_subject"


def test_new_volunteers_get_gold_often_and_experienced_ones_rarely(image_workflow):
    import random

    from labeler.classifications.selectors import gold_share

    gold_ids = set(SubjectState.objects.filter(workflow=image_workflow)[:3].values_list("subject_id", flat=True))
    SubjectState.objects.filter(subject_id__in=gold_ids).update(gold_answers={"T0": 0})
    SubjectState.objects.exclude(subject_id__in=gold_ids).update(gold_answers=None)
    rng = random.Random(3)
    served = [subject_next_for(workflow=image_workflow, volunteer_key=f"a:new{i}", rng=rng).id for i in range(200)]
    assert 0.35 < sum(s in gold_ids for s in served) / 200 < 0.65
    assert gold_share(image_workflow, 0) == 0.5
    assert gold_share(image_workflow, 10) == 0.25
    assert gold_share(image_workflow, 1000) == image_workflow.gold_share_floor
