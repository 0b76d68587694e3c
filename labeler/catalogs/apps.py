from django.apps import AppConfig


class CatalogsConfig(AppConfig):
    name = "labeler.catalogs"
    label = "catalogs"
    verbose_name = "Catalog exports"
