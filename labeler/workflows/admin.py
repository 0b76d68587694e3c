from django.contrib import admin

from labeler.workflows.models import Workflow


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "project", "kind", "version", "retire_after", "train_min_new_labels", "active"]
    list_filter = ["project", "kind", "active"]
    readonly_fields = ["version"]

    def save_model(self, request, obj, form, change):
        # A changed task tree is a new workflow version: classifications record which one they answered.
        if change and "task_tree" in form.changed_data:
            obj.version += 1
        super().save_model(request, obj, form, change)
