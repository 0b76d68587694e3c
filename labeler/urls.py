from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("labeler.catalogs.urls")),  # its /api/ exports and the staff page
    path("api/", include("labeler.api.urls")),
    path("science/", include("labeler.review.urls")),  # review queue, subject detail
    path("science/", include("labeler.dashboard.urls")),  # project dashboard, consensus, models
    path("", include("labeler.web.urls")),
]
