"""instaset: a self-hosted Instagram DM automation daemon."""

__version__ = "0.1.0"
