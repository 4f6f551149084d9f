from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from users.models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "role", "is_staff", "is_active", "daily_spend_cap", "date_joined")
    list_filter = ("is_staff", "is_active")
    search_fields = ("username", "email")
    fieldsets = (*DjangoUserAdmin.fieldsets, ("Spending", {"fields": ("daily_spend_cap",)}))
