"""The web console at /ui: its pages and API, sessions with CSRF tokens, the review queue and the operations behind its buttons."""
