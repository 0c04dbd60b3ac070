"""Desired state: the git repository of stacks, and how requests become stack updates."""
