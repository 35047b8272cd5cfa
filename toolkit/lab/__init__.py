"""The lab: a simulated mining rack reached over real SSH (podman rig containers)."""
