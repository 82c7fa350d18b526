"""The serving cascade's steps: guard -> classify -> route -> act, each a plain object."""
