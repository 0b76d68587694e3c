import numpy as np

from mlcore.simulate import sky, spectra
from mlcore.simulate.volunteers import SimVolunteer, confusion_weights, make_crowd, simulated_annotation
from mlcore.tasktree import validate_annotation


def _root_accuracy(volunteer, difficulty, rng, n=300):
    hits = 0
    for _ in range(n):
        truth = sky.IMAGE_CLASSES[rng.integers(len(sky.IMAGE_CLASSES))]
        path = simulated_annotation(volunteer, sky.GALAXY_TREE, sky.CLASS_ANSWERS, truth, difficulty, rng)
        hits += path[0]["answer"] == sky.CLASS_ANSWERS[truth]["T0"]
    return hits / n


def test_it_always_produces_valid_annotations_for_every_kind_and_tree():
    rng = np.random.default_rng(0)
    crowd = make_crowd(40, rng, spammer_fraction=0.2, careless_fraction=0.2)
    for tree, answers in ((sky.GALAXY_TREE, sky.CLASS_ANSWERS), (spectra.SPECTRUM_TREE, spectra.CLASS_ANSWERS)):
        for volunteer in crowd:
            for truth in answers:
                path = simulated_annotation(volunteer, tree, answers, truth, rng.random(), rng)
                assert validate_annotation(tree, path) == path


def test_it_makes_experts_more_accurate_than_spammers_on_the_root_question():
    rng = np.random.default_rng(1)
    expert = SimVolunteer("e", "expert", 0.97)
    random_spammer = SimVolunteer("s-random", "spammer", 0.0)
    first_spammer = SimVolunteer("s-first", "spammer", 0.0)
    expert_acc = _root_accuracy(expert, 0.2, rng)
    assert expert_acc > 0.85
    assert expert_acc > _root_accuracy(random_spammer, 0.2, rng) + 0.3
    assert expert_acc > _root_accuracy(first_spammer, 0.2, rng) + 0.3


def test_it_lowers_accuracy_as_difficulty_rises():
    rng = np.random.default_rng(2)
    volunteer = SimVolunteer("t", "typical", 0.85)
    assert _root_accuracy(volunteer, 0.0, rng) > _root_accuracy(volunteer, 1.0, rng) + 0.15


def test_it_honours_the_requested_crowd_composition():
    crowd = make_crowd(100, np.random.default_rng(3), spammer_fraction=0.1, careless_fraction=0.15,
                       expert_fraction=0.05)
    kinds = [v.kind for v in crowd]
    assert (kinds.count("spammer"), kinds.count("careless"), kinds.count("expert"), kinds.count("typical")) == (
        10, 15, 5, 70)
    assert len({v.name for v in crowd}) == 100
    small = [v.kind for v in make_crowd(5, np.random.default_rng(4))]
    assert small.count("spammer") >= 1 and small.count("careless") >= 1  # never fewer than asked


def test_it_confuses_faint_round_galaxies_with_stars_most():
    weights = confusion_weights("smooth_round", sky.IMAGE_CLASSES, difficulty=1.0)
    assert abs(weights.sum() - 1) < 1e-9 and weights[sky.IMAGE_CLASSES.index("smooth_round")] == 0
    assert sky.IMAGE_CLASSES[int(np.argmax(weights))] == "star"
