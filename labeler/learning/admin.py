from django.contrib import admin

from labeler.learning.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "number", "kind", "status", "label_count", "trained_at", "scored_at"]
    list_filter = ["workflow", "status"]
    readonly_fields = ["sha256", "checkpoint_dir", "metrics", "error"]
