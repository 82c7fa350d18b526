"""What leaves the machine: the egress policy (offline mode, masking) and deadline-bound pools for outgoing calls."""
