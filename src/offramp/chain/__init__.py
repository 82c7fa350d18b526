"""Chains of specialised small models: the ``stages:`` of a pipeline file, how a message goes
through them, and hierarchies (a router and one model per parent) trained in one call."""
