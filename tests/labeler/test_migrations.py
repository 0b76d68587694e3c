from django.core.management import call_command


def test_the_models_and_their_migrations_agree(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero if a migration is missing
