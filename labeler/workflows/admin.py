from django.contrib import admin

from labeler.workflows.models import Workflow


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["slug", "project", "kind", "version", "retire_after", "train_min_new_labels", "active"]
    list_filter = ["project", "kind", "active"]
