from django.apps import AppConfig


class UsersConfig(AppConfig):
    name = "users"
    verbose_name = "Users"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from users.authentication import recent_users
        from users.models import User

        def forget_users(**_: object) -> None:
            recent_users.clear()

        post_save.connect(forget_users, sender=User, weak=False, dispatch_uid="users.recent")
        post_delete.connect(forget_users, sender=User, weak=False, dispatch_uid="users.recent-delete")
