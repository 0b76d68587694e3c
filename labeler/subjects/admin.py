from django.contrib import admin

from labeler.subjects.models import Project, Subject


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Subject)
class SubjectAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "kind", "ra", "dec", "created_at"]
    list_filter = ["project", "kind"]
    search_fields = ["external_id"]
