"""SQLite storage: the only package that contains SQL."""

from instaset.store.db import Database, open_database

__all__ = ["Database", "open_database"]
