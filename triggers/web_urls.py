from django.urls import path

from . import web

urlpatterns = [path("workflows/<str:tag>/triggers/", web.triggers_page, name="web-triggers")]
