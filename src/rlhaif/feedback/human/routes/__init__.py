"""Thin routes: pages for annotators (``annotate``), the admin page (``admin``), the JSON API (``api``)."""
