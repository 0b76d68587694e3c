from django.contrib import admin, messages

from labeler.learning import registry
from labeler.learning.models import EvaluationSet, ModelEvent, ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["workflow", "number", "kind", "status", "label_count", "progress", "trained_at", "scored_at"]
    list_filter = ["workflow", "status"]
    readonly_fields = ["sha256", "checkpoint_dir", "metrics", "progress_detail", "attempts", "error"]
    actions = ["force_promote", "roll_back_workflow"]

    @admin.action(description="Promote (forced: skip the evaluation-set comparison)")
    def force_promote(self, request, queryset):
        for version in queryset:
            try:
                registry.model_version_promote(model_version=version, user=request.user, force=True)
                self.message_user(request, f"v{version.number} of {version.workflow} is active")
            except registry.RegistryError as exc:
                self.message_user(request, str(exc), messages.ERROR)

    @admin.action(description="Roll back these versions' workflows to their previous version")
    def roll_back_workflow(self, request, queryset):
        for workflow in {version.workflow for version in queryset}:
            try:
                event = registry.model_version_rollback(workflow=workflow, user=request.user)
                self.message_user(request, f"{workflow}: v{event.model_version.number} is active again")
            except registry.RegistryError as exc:
                self.message_user(request, str(exc), messages.ERROR)


@admin.register(ModelEvent)
class ModelEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "workflow", "model_version", "action", "user", "reason"]
    list_filter = ["workflow", "action"]
    readonly_fields = ["workflow", "model_version", "previous", "action", "user", "reason", "detail", "created_at"]


@admin.register(EvaluationSet)
class EvaluationSetAdmin(admin.ModelAdmin):
    list_display = ["workflow", "updated_at"]
    readonly_fields = ["workflow", "subject_ids", "created_at", "updated_at"]
